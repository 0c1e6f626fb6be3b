package tokenseq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

type fixture struct {
	cli    *clientv3.Client
	layout keyspace.Layout
	reg    *registry.Registry
	sub    *tokenseq.Submitter
	ctx    context.Context
}

func newFixture(t *testing.T) *fixture {
	_, cli := testenv.Etcd(t)
	layout := keyspace.MustNew("t")
	return &fixture{cli: cli, layout: layout, reg: registry.New(cli, layout),
		sub: newSubmitter(t, tokenseq.SubmitterConfig{Etcd: cli, Layout: layout}), ctx: testenv.Ctx(t, 60*time.Second)}
}

// newSubmitter returns tokenseq.NewSubmitter(cfg), failing t on an error.
func newSubmitter(t testing.TB, cfg tokenseq.SubmitterConfig) *tokenseq.Submitter {
	t.Helper()
	sub, err := tokenseq.NewSubmitter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func (f *fixture) register(t *testing.T, name string) *registry.Incarnation {
	t.Helper()
	inc, err := f.reg.Register(f.ctx, name, registry.RegisterConfig{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inc.Close(context.Background()) })
	return inc
}

func (f *fixture) pendingBatches(t *testing.T) int64 {
	t.Helper()
	resp, err := f.cli.Get(f.ctx, f.layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func TestTokensGrowWithAcceptanceOrder(t *testing.T) {
	f := newFixture(t)
	a, b := f.register(t, "a"), f.register(t, "b")
	var last tokenseq.Token
	for i := range 20 {
		inc := a
		if i%2 == 1 {
			inc = b
		}
		tok, err := f.sub.Submit(f.ctx, inc.Name, inc.Incarnation, "", []ops.Op{ops.Set("k", []byte("v"), 0)})
		if err != nil {
			t.Fatal(err)
		}
		if !last.Less(tok) {
			t.Fatalf("token %v after %v", tok, last)
		}
		last = tok
	}
}

// G1: a superseded incarnation and an expired one get distinct errors, and
// nothing of theirs is stored.
func TestSupersededAndExpiredAreRefusedDistinctly(t *testing.T) {
	f := newFixture(t)
	old := f.register(t, "svc")
	if _, err := f.sub.Submit(f.ctx, "svc", old.Incarnation, "", []ops.Op{ops.Set("k", []byte("1"), 0)}); err != nil {
		t.Fatal(err)
	}
	cur := f.register(t, "svc") // a restart supersedes old
	before := f.pendingBatches(t)
	_, err := f.sub.Submit(f.ctx, "svc", old.Incarnation, "", []ops.Op{ops.Set("k", []byte("2"), 0)})
	var refused *tokenseq.RefusedError
	if !errors.Is(err, tokenseq.ErrSuperseded) || errors.Is(err, tokenseq.ErrExpired) || !errors.As(err, &refused) {
		t.Fatalf("superseded submit: %v", err)
	}
	if refused.Current != cur.Incarnation || refused.Incarnation != old.Incarnation {
		t.Fatalf("refusal names %d/%d, want %d/%d", refused.Incarnation, refused.Current, old.Incarnation, cur.Incarnation)
	}

	// Expire the current incarnation by revoking its lease from outside.
	if _, err := f.cli.Revoke(f.ctx, cur.LeaseID); err != nil {
		t.Fatal(err)
	}
	_, err = f.sub.Submit(f.ctx, "svc", cur.Incarnation, "", []ops.Op{ops.Set("k", []byte("3"), 0)})
	if !errors.Is(err, tokenseq.ErrExpired) || errors.Is(err, tokenseq.ErrSuperseded) {
		t.Fatalf("expired submit: %v", err)
	}
	if got := f.pendingBatches(t); got != before {
		t.Fatalf("refused submissions stored something: %d batches, want %d", got, before)
	}
}

// A registration that ends by Close (unregister) refuses later submissions
// as expired.
func TestUnregisteredIncarnationIsExpired(t *testing.T) {
	f := newFixture(t)
	inc := f.register(t, "x")
	if err := inc.Close(f.ctx); err != nil {
		t.Fatal(err)
	}
	_, err := f.sub.Submit(f.ctx, "x", inc.Incarnation, "", []ops.Op{ops.Delete("k")})
	if !errors.Is(err, tokenseq.ErrExpired) {
		t.Fatalf("got %v", err)
	}
}

// Bad input is refused before anything is sent to etcd.
func TestBadInputWritesNothing(t *testing.T) {
	f := newFixture(t)
	inc := f.register(t, "x")
	rev := func() int64 {
		r, err := f.cli.Get(f.ctx, "anything")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	start := rev()
	for _, batch := range [][]ops.Op{
		nil,
		{ops.Set("", []byte("v"), 0)},
		{ops.Set(strings.Repeat("k", 300), nil, 0)},
		{ops.Set("a b", nil, 0)},
		{ops.Set("k", make([]byte, ops.DefaultMaxItemBytes), 0)},
		{ops.Set("k", nil, -time.Second)},
		{{Kind: ops.KindSet, Key: "k", Flags: 1}},
		{ops.Set("ok", nil, 0), ops.Delete("bad key")},
	} {
		if _, err := f.sub.Submit(f.ctx, "x", inc.Incarnation, "", batch); !errors.Is(err, ops.ErrInvalid) {
			t.Errorf("batch %v: got %v, want ErrInvalid", batch, err)
		}
	}
	for _, name := range []string{"", "a/b", "a b", strings.Repeat("n", 200)} {
		if _, err := f.sub.Submit(f.ctx, name, inc.Incarnation, "", []ops.Op{ops.Delete("k")}); !errors.Is(err, keyspace.ErrInvalidName) {
			t.Errorf("name %q: got %v", name, err)
		}
	}
	if end := rev(); end != start {
		t.Fatalf("etcd revision moved from %d to %d: something was written", start, end)
	}
}

// G8 at the token level: WaitApplied returns once the watermark reaches the
// token, and not before.
func TestWaitAppliedWakesOnWatermark(t *testing.T) {
	f := newFixture(t)
	target := tokenseq.Token{Revision: 1000}
	done := make(chan error, 1)
	go func() { done <- tokenseq.WaitApplied(f.ctx, f.cli, f.layout, target) }()
	if _, err := f.cli.Put(f.ctx, f.layout.Applied(), tokenseq.Token{Revision: 999}.String()); err != nil {
		t.Fatal(err)
	}
	// A watermark below the token must not release the waiter; observe that
	// by a second waiter on 999 finishing first.
	if err := tokenseq.WaitApplied(f.ctx, f.cli, f.layout, tokenseq.Token{Revision: 999}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitApplied returned %v before the watermark reached the token", err)
	default:
	}
	if _, err := f.cli.Put(f.ctx, f.layout.Applied(), tokenseq.Token{Revision: 1001}.String()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	if err := tokenseq.WaitApplied(ctx, f.cli, f.layout, tokenseq.Token{Revision: 5000}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}

// A caller superseded by an incarnation that has since ended (a takeover
// that unregistered) is told superseded, not expired: its own lease never
// ended, so it must not re-register and fight back.
func TestSupersededByAnEndedIncarnationIsSuperseded(t *testing.T) {
	f := newFixture(t)
	old := f.register(t, "svc")
	taker := f.register(t, "svc")
	if err := taker.Close(f.ctx); err != nil {
		t.Fatal(err)
	}
	_, err := f.sub.Submit(f.ctx, "svc", old.Incarnation, "", []ops.Op{ops.Delete("k")})
	if !errors.Is(err, tokenseq.ErrSuperseded) {
		t.Fatalf("got %v, want ErrSuperseded", err)
	}
	// Whereas an incarnation whose own lease ended first is expired, even if
	// the name was registered and released again afterwards.
	mine := f.register(t, "other")
	if _, err := f.cli.Revoke(f.ctx, mine.LeaseID); err != nil {
		t.Fatal(err)
	}
	later := f.register(t, "other")
	if err := later.Close(f.ctx); err != nil {
		t.Fatal(err)
	}
	_, err = f.sub.Submit(f.ctx, "other", mine.Incarnation, "", []ops.Op{ops.Delete("k")})
	if !errors.Is(err, tokenseq.ErrExpired) {
		t.Fatalf("got %v, want ErrExpired", err)
	}
}

// An AppliedWatcher releases each waiter on the watermark event that
// reaches its token, not before; a waiter that gives up is forgotten; and
// once everyone is released it follows again for the next waiter.
func TestAppliedWatcherReleasesWaitersAsTheWatermarkPasses(t *testing.T) {
	f := newFixture(t)
	aw := tokenseq.NewAppliedWatcher(f.cli, f.layout)
	setWatermark := func(rev int64) {
		t.Helper()
		if _, err := f.cli.Put(f.ctx, f.layout.Applied(), tokenseq.Token{Revision: rev}.String()); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(ctx context.Context, tok tokenseq.Token) chan error {
		done := make(chan error, 1)
		go func() { done <- aw.Wait(ctx, tok) }()
		return done
	}
	low := wait(f.ctx, tokenseq.Token{Revision: 1000})
	mid := wait(f.ctx, tokenseq.Token{Revision: 1000, Index: 3})
	high := wait(f.ctx, tokenseq.Token{Revision: 2000})
	giveUp, cancel := context.WithCancel(f.ctx)
	gaveUp := wait(giveUp, tokenseq.Token{Revision: 3000})
	setWatermark(999)
	// A waiter that passes once the watermark event was seen.
	if err := aw.Wait(f.ctx, tokenseq.Token{Revision: 999}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []chan error{low, mid, high, gaveUp} {
		select {
		case err := <-c:
			t.Fatalf("a waiter returned %v before the watermark reached its token", err)
		default:
		}
	}
	setWatermark(1000)
	if err := <-low; err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter that gave up: %v", err)
	}
	if _, err := f.cli.Put(f.ctx, f.layout.Applied(), tokenseq.Token{Revision: 1000, Index: 5}.String()); err != nil {
		t.Fatal(err)
	}
	if err := <-mid; err != nil {
		t.Fatal(err)
	}
	setWatermark(2500)
	if err := <-high; err != nil {
		t.Fatal(err)
	}
	// Everyone was released; the next waiter follows again.
	next := wait(f.ctx, tokenseq.Token{Revision: 2600})
	setWatermark(2600)
	if err := <-next; err != nil {
		t.Fatal(err)
	}
	// A token the watermark already covers returns at once.
	if err := aw.Wait(f.ctx, tokenseq.Token{Revision: 10}); err != nil {
		t.Fatal(err)
	}
}

// A token's index counts (G8): while the watermark is 1000.0, then 1000.2,
// a waiter on 1000.3 stays held, and so does one that arrives then; the
// watermark 1000.3 releases it. Each step first makes sure the watcher has
// seen the watermark (a waiter on it returns), so "still held" is a fact,
// not a timing.
func TestAppliedWatcherHoldsAWaiterUntilItsIndex(t *testing.T) {
	f := newFixture(t)
	aw := tokenseq.NewAppliedWatcher(f.cli, f.layout)
	target := tokenseq.Token{Revision: 1000, Index: 3}
	done := make(chan error, 1)
	go func() { done <- aw.Wait(f.ctx, target) }()
	testenv.Eventually(t, 10*time.Second, func() bool { return tokenseq.Waiting(aw) == 1 }, "the waiter on %s is held", target)
	gone, cancel := context.WithCancel(f.ctx)
	cancel()
	for _, wm := range []tokenseq.Token{{Revision: 1000}, {Revision: 1000, Index: 2}} {
		if _, err := f.cli.Put(f.ctx, f.layout.Applied(), wm.String()); err != nil {
			t.Fatal(err)
		}
		if err := aw.Wait(f.ctx, wm); err != nil {
			t.Fatal(err)
		}
		if n := tokenseq.Waiting(aw); n != 1 {
			t.Fatalf("watermark %s released the waiter on %s", wm, target)
		}
		// A waiter arriving at this watermark finds it short of its token and
		// waits: with its context ended, it returns that.
		if err := aw.Wait(gone, target); !errors.Is(err, context.Canceled) {
			t.Fatalf("a wait on %s made at watermark %s returned %v, want it held (context.Canceled)", target, wm, err)
		}
		select {
		case err := <-done:
			t.Fatalf("the wait on %s returned %v at watermark %s", target, err, wm)
		default:
		}
	}
	if _, err := f.cli.Put(f.ctx, f.layout.Applied(), target.String()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := aw.Wait(gone, target); err != nil {
		t.Fatalf("a wait on %s at watermark %s: %v", target, target, err)
	}
}
