package regwatch_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/regwatch"
)

// wait bounds every wait for a signal that must come.
const wait = 10 * time.Second

var layout = keyspace.MustNew("regwatch-test")

func newWatcher(t *testing.T, cli *clientv3.Client) *regwatch.Watcher {
	t.Helper()
	w, err := regwatch.New(regwatch.Config{Etcd: cli, Layout: layout, Logger: testenv.Logger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

// subscribe subscribes and cancels the subscription when the test ends.
func subscribe(t *testing.T, w *regwatch.Watcher, name string, inc int64) (<-chan regwatch.Signal, func()) {
	t.Helper()
	ch, cancel, err := w.Subscribe(testenv.Ctx(t, wait), name, inc)
	if err != nil {
		t.Fatalf("Subscribe(%q, %d): %v", name, inc, err)
	}
	t.Cleanup(cancel)
	return ch, cancel
}

// register puts name's registration, under lease when it is not zero, and
// returns the new incarnation.
func register(t *testing.T, cli *clientv3.Client, name string, lease clientv3.LeaseID) int64 {
	t.Helper()
	var opts []clientv3.OpOption
	if lease != clientv3.NoLease {
		opts = append(opts, clientv3.WithLease(lease))
	}
	resp, err := cli.Put(testenv.Ctx(t, wait), layout.Reg(name), "{}", opts...)
	if err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
	return resp.Header.Revision
}

func grant(t *testing.T, cli *clientv3.Client) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Grant(testenv.Ctx(t, wait), 60)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	return resp.ID
}

// expect waits for signal want on ch.
func expect(t *testing.T, ch <-chan regwatch.Signal, want regwatch.Signal, what string) {
	t.Helper()
	select {
	case got, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed, want %v", what, want)
		}
		if got != want {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	case <-time.After(wait):
		t.Fatalf("%s: no %v within %v", what, want, wait)
	}
}

// expectNone checks that ch holds no signal. Call it once a later event,
// on another name, has been received: the Watcher dispatches events in
// revision order, so by then whatever was due on ch is in it.
func expectNone(t *testing.T, ch <-chan regwatch.Signal, what string) {
	t.Helper()
	select {
	case got, ok := <-ch:
		t.Fatalf("%s: got %v (open %v), want nothing", what, got, ok)
	default:
	}
}

// sentinel makes an event that a subscription of its own receives: once
// it has, every earlier event has been dispatched.
func sentinel(t *testing.T, w *regwatch.Watcher, cli *clientv3.Client, name string) {
	t.Helper()
	inc := register(t, cli, name, clientv3.NoLease)
	ch, cancel := subscribe(t, w, name, inc)
	defer cancel()
	register(t, cli, name, clientv3.NoLease)
	expect(t, ch, regwatch.Changed, "sentinel "+name)
}

func TestNewIncarnationIsChanged(t *testing.T) {
	_, cli := testenv.Etcd(t)
	w := newWatcher(t, cli)

	inc := register(t, cli, "a", grant(t, cli))
	ch, _ := subscribe(t, w, "a", inc)
	register(t, cli, "a", grant(t, cli))
	expect(t, ch, regwatch.Changed, "a superseded under a new lease")

	inc = register(t, cli, "b", clientv3.NoLease)
	ch, _ = subscribe(t, w, "b", inc)
	register(t, cli, "b", clientv3.NoLease)
	expect(t, ch, regwatch.Changed, "b put again without lease")

	// Changed ends the subscription: a later incarnation says nothing more.
	register(t, cli, "b", clientv3.NoLease)
	sentinel(t, w, cli, "after-b")
	expectNone(t, ch, "b after Changed")
}

func TestDeleteIsChanged(t *testing.T) {
	_, cli := testenv.Etcd(t)
	w := newWatcher(t, cli)

	lease := grant(t, cli)
	inc := register(t, cli, "a", lease)
	ch, _ := subscribe(t, w, "a", inc)
	if _, err := cli.Revoke(testenv.Ctx(t, wait), lease); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	expect(t, ch, regwatch.Changed, "a's lease revoked")

	inc = register(t, cli, "b", clientv3.NoLease)
	ch, _ = subscribe(t, w, "b", inc)
	if _, err := cli.Delete(testenv.Ctx(t, wait), layout.Reg("b")); err != nil {
		t.Fatalf("delete: %v", err)
	}
	expect(t, ch, regwatch.Changed, "b deleted")
}

func TestOwnPutIsIgnored(t *testing.T) {
	_, cli := testenv.Etcd(t)
	w := newWatcher(t, cli)
	sentinel(t, w, cli, "warm-up") // the watch runs

	// Subscribed right after the put: its event may be dispatched before
	// or after the subscription; either way it says nothing.
	inc := register(t, cli, "a", grant(t, cli))
	after, _ := subscribe(t, w, "a", inc)

	// Subscribed before the put, with the incarnation the put will have
	// (nobody else writes to this etcd): the put's event is dispatched to
	// the subscription, and must be ignored.
	resp, err := cli.Get(testenv.Ctx(t, wait), "any")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	before, _ := subscribe(t, w, "b", resp.Header.Revision+1)
	if rev := register(t, cli, "b", clientv3.NoLease); rev != resp.Header.Revision+1 {
		t.Fatalf("b's put is at revision %d, want %d: something else writes", rev, resp.Header.Revision+1)
	}

	sentinel(t, w, cli, "s")
	expectNone(t, after, "a subscribed after its put")
	expectNone(t, before, "b subscribed before its put")
}

func TestSubscriptionsAreIndependent(t *testing.T) {
	_, cli := testenv.Etcd(t)
	w := newWatcher(t, cli)

	inc := register(t, cli, "a", clientv3.NoLease)
	incB := register(t, cli, "b", clientv3.NoLease)
	a1, _ := subscribe(t, w, "a", inc)
	a2, _ := subscribe(t, w, "a", inc)
	a3, cancel3 := subscribe(t, w, "a", inc)
	b, _ := subscribe(t, w, "b", incB)
	cancel3()
	cancel3() // idempotent

	inc2 := register(t, cli, "a", clientv3.NoLease)
	expect(t, a1, regwatch.Changed, "a1")
	expect(t, a2, regwatch.Changed, "a2")

	// A subscription of a later incarnation of the same name is told of
	// the one after it only.
	a4, _ := subscribe(t, w, "a", inc2)
	sentinel(t, w, cli, "s1")
	expectNone(t, a4, "a4 before a's next incarnation")
	register(t, cli, "a", clientv3.NoLease)
	expect(t, a4, regwatch.Changed, "a4")

	sentinel(t, w, cli, "s2")
	expectNone(t, a1, "a1 after its Changed")
	expectNone(t, a3, "cancelled a3")
	expectNone(t, b, "b, another name")
}

// TestResume breaks the watch: it resumes where it stopped, and a change
// made meanwhile is delivered, without Recheck.
func TestResume(t *testing.T) {
	_, cli := testenv.Etcd(t)
	w := newWatcher(t, cli)

	inc := register(t, cli, "a", clientv3.NoLease)
	a, _ := subscribe(t, w, "a", inc)
	idle, _ := subscribe(t, w, "idle", 1)
	sentinel(t, w, cli, "s1") // the watch runs

	regwatch.BreakWatch(w)
	register(t, cli, "a", clientv3.NoLease) // most likely before the watch is back
	expect(t, a, regwatch.Changed, "a changed while the watch was broken")
	// A Recheck would have been sent before the watch that delivered a's
	// change started.
	expectNone(t, idle, "idle subscription after a resume without compaction")
}

// TestCompactedResume breaks the watch once etcd compacted the revisions
// it would resume from: every subscription gets Recheck, and later changes
// are still delivered.
func TestCompactedResume(t *testing.T) {
	_, cli := testenv.Etcd(t)
	w := newWatcher(t, cli)
	ctx := testenv.Ctx(t, wait)

	inc := register(t, cli, "a", clientv3.NoLease)
	a, _ := subscribe(t, w, "a", inc)
	sentinel(t, w, cli, "s1") // the watch runs and has seen every revision so far

	// Two revisions outside the registrations, and a compaction up to the
	// second: the watch would resume from the first.
	if _, err := cli.Put(ctx, "outside", "1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Put(ctx, "outside", "2")
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}

	regwatch.BreakWatch(w)
	expect(t, a, regwatch.Recheck, "a after the compacted resume")

	register(t, cli, "a", clientv3.NoLease)
	expect(t, a, regwatch.Changed, "a changed after the Recheck")

	// A subscription made after the restart starts clean.
	incB := register(t, cli, "b", clientv3.NoLease)
	b, _ := subscribe(t, w, "b", incB)
	sentinel(t, w, cli, "s2")
	expectNone(t, b, "b subscribed after the restart")
}

// TestManySubscriptions subscribes many names: the goroutines do not grow
// with them, and each costs a few hundred bytes.
func TestManySubscriptions(t *testing.T) {
	const n = 5000
	_, cli := testenv.Etcd(t)
	w := newWatcher(t, cli)
	sentinel(t, w, cli, "warm-up") // the watch runs

	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("name-%05d", i)
	}
	chans := make([]<-chan regwatch.Signal, n)
	cancels := make([]func(), n)
	ctx := testenv.Ctx(t, wait)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	for i, name := range names {
		ch, cancel, err := w.Subscribe(ctx, name, 1)
		if err != nil {
			t.Fatalf("Subscribe %d: %v", i, err)
		}
		chans[i], cancels[i] = ch, cancel
	}
	grown := runtime.NumGoroutine() - goroutines
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	t.Logf("%d subscriptions: %+d goroutines, %d heap bytes each (with 16 of the test's own slices)",
		n, grown, (int64(after.HeapAlloc)-int64(before.HeapAlloc))/n)
	if grown > 2 {
		t.Errorf("goroutines grew by %d with %d subscriptions", grown, n)
	}

	register(t, cli, names[n/2], clientv3.NoLease)
	expect(t, chans[n/2], regwatch.Changed, names[n/2])
	sentinel(t, w, cli, "s")
	for i, ch := range chans {
		if i != n/2 {
			expectNone(t, ch, names[i])
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
}

func TestClose(t *testing.T) {
	_, cli := testenv.Etcd(t)
	if _, err := cli.Get(testenv.Ctx(t, wait), "warm-up"); err != nil {
		t.Fatalf("get: %v", err)
	}
	baseline := runtime.NumGoroutine()

	w, err := regwatch.New(regwatch.Config{Etcd: cli, Layout: layout, Logger: testenv.Logger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	var chans []<-chan regwatch.Signal
	for i := range 100 {
		ch, _, err := w.Subscribe(testenv.Ctx(t, wait), fmt.Sprintf("n%d", i), 1)
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		chans = append(chans, ch)
	}
	_, cancelled, err := w.Subscribe(testenv.Ctx(t, wait), "cancelled", 1)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	cancelled()
	// The watch is established: the etcd client (3.7.3) keeps its stream
	// of watches running when a watch is cancelled before etcd confirmed
	// its creation, until the client closes.
	sentinel(t, w, cli, "s")

	w.Close()
	for i, ch := range chans {
		select {
		case s, ok := <-ch:
			if ok {
				t.Fatalf("subscription %d got %v, want its channel closed", i, s)
			}
		default:
			t.Fatalf("subscription %d: channel open after Close", i)
		}
	}
	w.Close() // again
	cancelled()
	if _, _, err := w.Subscribe(testenv.Ctx(t, wait), "late", 1); !errors.Is(err, regwatch.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	testenv.Eventually(t, wait, func() bool { return runtime.NumGoroutine() <= baseline },
		"goroutines back to %d after Close", baseline)
}

// TestSubscribeWaitsForTheWatch has no etcd to start the watch with:
// Subscribe ends with its context, and Close still returns.
func TestSubscribeWaitsForTheWatch(t *testing.T) {
	srv, cli := testenv.Etcd(t)
	srv.Close()
	w := newWatcher(t, cli)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := w.Subscribe(ctx, "a", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe without etcd: %v, want context.DeadlineExceeded", err)
	}
	closed := make(chan struct{})
	go func() {
		w.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatalf("Close did not return within %v", wait)
	}
}

func TestValidate(t *testing.T) {
	_, cli := testenv.Etcd(t)
	for _, tc := range []struct {
		cfg   regwatch.Config
		field string
	}{
		{regwatch.Config{Layout: layout}, "Etcd"},
		{regwatch.Config{Etcd: &clientv3.Client{}, Layout: layout}, "Etcd"},
		{regwatch.Config{Etcd: cli}, "Layout"},
	} {
		err := tc.cfg.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Pkg != "regwatch" || fe.Field != tc.field || !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("Validate: %v, want a regwatch FieldError on %s", err, tc.field)
		}
		if _, err := regwatch.New(tc.cfg); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("New: %v, want a FieldError on %s", err, tc.field)
		}
	}
	cfg := regwatch.Config{Etcd: cli, Layout: layout}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate of a good config: %v", err)
	}
}

// Closing the etcd client ends the Watcher's goroutine without Close:
// there is nothing left to watch through.
func TestClosingTheClientEndsTheWatch(t *testing.T) {
	srv, _ := testenv.Etcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w, err := regwatch.New(regwatch.Config{Etcd: cli, Layout: layout, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, _, err := w.Subscribe(testenv.Ctx(t, wait), "a", 1); err != nil {
		t.Fatal(err)
	}
	running := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "regwatch.(*Watcher)")
	}
	if !running() {
		t.Fatal("no goroutine of the Watcher runs after Subscribe")
	}
	cli.Close()
	testenv.Eventually(t, wait, func() bool { return !running() }, "the Watcher still runs after its client closed")
}
