package readback_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/readback"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// counts is every count of st, to compare at once.
type counts struct{ ok, missing, stale, misplaced, superseded, full uint64 }

func countsOf(st *readback.Stats) counts {
	return counts{st.Count(readback.OK), st.Count(readback.Missing), st.Count(readback.Stale), st.Count(readback.Misplaced),
		st.Dropped(readback.DropSuperseded), st.Dropped(readback.DropQueueFull)}
}

// Each result is counted as what it is: writes observed over a pool of two
// real servers, where the test planted what a reader would find.
func TestReadbackResults(t *testing.T) {
	a, b := testenv.StartMemcached(t), testenv.StartMemcached(t)
	ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: []hashring.Server{{Addr: a.Addr}, {Addr: b.Addr}}})
	if err != nil {
		t.Fatal(err)
	}
	mw, err := memfence.New(memfence.Config{Selector: ring})
	if err != nil {
		t.Fatal(err)
	}
	defer mw.Close()
	mcs := []*memcache.Client{memcache.New(a.Addr), memcache.New(b.Addr)}
	defer mcs[0].Close()
	defer mcs[1].Close()
	ctx := testenv.Ctx(t, 30*time.Second)
	const term = 5
	set := func(key, value string) applier.Write {
		t.Helper()
		if err := mw.Set(ctx, key, []byte(value), 0, term); err != nil {
			t.Fatal(err)
		}
		return applier.Write{Op: ops.Set(key, []byte(value), 0), Term: term}
	}
	st := &readback.Stats{}
	// No applier ends rounds here: findings wait RoundWait.
	c, err := readback.New(readback.Config{Reader: mw, Rate: 1, Delay: time.Millisecond, Stats: st, RoundWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(rctx) }()
	defer func() { cancel(); <-done }()

	c.Observe(set("ok", "v"))
	older := set("older", "v")
	if err := mcs[ring.Index("older")].Set(&memcache.Item{Key: "older", Value: []byte("v"), Flags: memfence.Flags(term - 1)}); err != nil {
		t.Fatal(err)
	}
	c.Observe(older)
	c.Observe(applier.Write{Op: ops.Set("never", []byte("v"), 0), Term: term})
	moved := set("moved", "v")
	own := ring.Index("moved")
	if err := mcs[own].Delete("moved"); err != nil {
		t.Fatal(err)
	}
	if err := mcs[1-own].Set(&memcache.Item{Key: "moved", Value: []byte("v"), Flags: memfence.Flags(term)}); err != nil {
		t.Fatal(err)
	}
	c.Observe(moved)
	set("present", "v")
	c.Observe(applier.Write{Op: ops.Delete("present"), Term: term}) // still there: stale
	c.Observe(applier.Write{Op: ops.Delete("gone"), Term: term})
	want := counts{ok: 2, missing: 1, stale: 2, misplaced: 1}
	var got counts
	testenv.Eventually(t, 10*time.Second, func() bool { got = countsOf(st); return got == want }, "counts, want %+v", want)
	if got != want {
		t.Fatalf("counts %+v", got)
	}

	// A full queue drops the sample, without waiting.
	full, err := readback.New(readback.Config{Reader: mw, Rate: 1, QueueSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	full.Observe(set("x", "1"))
	full.Observe(set("y", "1"))
	full.Observe(set("x", "2"))
	if got := countsOf(full.Stats()); got.full != 1 || got.superseded != 1 {
		t.Fatalf("full queue: %+v, want one dropped and one superseded", got)
	}
	if _, err := readback.New(readback.Config{Reader: mw, Rate: 2}); err == nil {
		t.Fatal("Rate 2 accepted")
	}
}

// signalingReader tells, on reads, that the read was made.
type signalingReader struct {
	readback.Reader
	read chan string
}

func (r signalingReader) Get(ctx context.Context, key string) (memfence.Item, error) {
	it, err := r.Reader.Get(ctx, key)
	select {
	case r.read <- key:
	case <-ctx.Done():
	}
	return it, err
}

// A read that sees a newer write of its key before the applier reported
// that write is not taken for a stale item: the finding waits for the
// round in progress to end, and the write reported in it supersedes the
// sample. A round that ends without such a write lets the finding count.
func TestFindingWaitsForTheRoundInProgress(t *testing.T) {
	m := testenv.StartMemcached(t)
	mw, err := memfence.New(memfence.Config{Servers: []string{m.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer mw.Close()
	ctx := testenv.Ctx(t, 30*time.Second)
	const term = 3
	set := func(key, value string) applier.Write {
		t.Helper()
		if err := mw.Set(ctx, key, []byte(value), 0, term); err != nil {
			t.Fatal(err)
		}
		return applier.Write{Op: ops.Set(key, []byte(value), 0), Term: term}
	}
	st := &readback.Stats{}
	r := signalingReader{Reader: mw, read: make(chan string)}
	// RoundWait longer than the test: only RoundDone ends a wait.
	c, err := readback.New(readback.Config{Reader: r, Rate: 1, Delay: time.Millisecond, Stats: st, RoundWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(rctx) }()
	defer func() { cancel(); <-done }()

	first := set("k", "v1")
	c.Observe(first)
	second := set("k", "v2") // landed, not reported yet
	<-r.read
	c.Observe(second) // reported within the round in progress, and sampled
	// Rounds end until the finding is counted: the one the finding waits
	// for may end only after it started waiting.
	tick := func(cond func() bool) func() bool { return func() bool { c.RoundDone(1, 0); return cond() } }
	testenv.Eventually(t, 10*time.Second, tick(func() bool { return st.Dropped(readback.DropSuperseded) == 1 }), "superseded %+v", countsOf(st))
	<-r.read // second's read: v2, ok
	testenv.Eventually(t, 10*time.Second, func() bool { return st.Count(readback.OK) == 1 }, "ok %+v", countsOf(st))

	c.Observe(set("j", "v1"))
	set("j", "other") // a write no round reports: a stale finding
	<-r.read
	testenv.Eventually(t, 10*time.Second, tick(func() bool { return st.Count(readback.Stale) == 1 }), "stale %+v", countsOf(st))
	if got := countsOf(st); got != (counts{ok: 1, stale: 1, superseded: 1}) {
		t.Fatalf("counts %+v", got)
	}
}

// A key written again and again before its sample is read is judged on its
// newest write, however often it is written: the newer write takes the
// waiting sample's place.
func TestNewestWriteTakesTheWaitingSamplesPlace(t *testing.T) {
	m := testenv.StartMemcached(t)
	mw, err := memfence.New(memfence.Config{Servers: []string{m.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer mw.Close()
	ctx := testenv.Ctx(t, 30*time.Second)
	st := &readback.Stats{}
	c, err := readback.New(readback.Config{Reader: mw, Rate: 1, Delay: time.Millisecond, Stats: st, RoundWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Observed before Run starts: no read comes between the writes.
	for i := range 5 {
		v := fmt.Sprintf("v%d", i)
		if err := mw.Set(ctx, "hot", []byte(v), 0, 2); err != nil {
			t.Fatal(err)
		}
		c.Observe(applier.Write{Op: ops.Set("hot", []byte(v), 0), Term: 2})
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	want := counts{ok: 1, superseded: 4}
	testenv.Eventually(t, 10*time.Second, func() bool { return countsOf(st) == want }, "counts %+v, want %+v", countsOf(st), want)
}

// Findings other than ok are logged at warn level within a bound, so that a
// memcached losing everything does not flood the log; each is counted
// whether logged or not.
func TestWarnLinesAreBounded(t *testing.T) {
	m := testenv.StartMemcached(t)
	mw, err := memfence.New(memfence.Config{Servers: []string{m.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer mw.Close()
	var out testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	st := &readback.Stats{}
	c, err := readback.New(readback.Config{Reader: mw, Rate: 1, Delay: time.Millisecond, Stats: st, RoundWait: time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// 300 writes never made: each read back missing.
	const n = 300
	for i := range n {
		c.Observe(applier.Write{Op: ops.Set(fmt.Sprintf("lost-%d", i), []byte("v"), 0), Term: 2})
	}
	ctx := testenv.Ctx(t, 60*time.Second)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	testenv.Eventually(t, 30*time.Second, func() bool { return st.Count(readback.Missing) == n }, "missing %+v", countsOf(st))
	lines := strings.Count(out.String(), `msg="read back"`)
	// The burst, and what refills at 10 a second while the test runs
	// (far from the 200 more it would take 20 s to refill).
	if lines < 100 || lines >= n {
		t.Fatalf("%d warn lines for %d findings", lines, n)
	}
}

// A leader reading back every write it applies finds them all ok.
func TestLeaderReadsBack(t *testing.T) {
	_, cli := testenv.Etcd(t)
	a, b := testenv.StartMemcached(t), testenv.StartMemcached(t)
	st := &readback.Stats{}
	const ns = "readback"
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "a", Memcached: []string{a.Addr, b.Addr},
		Distribution: hashring.Ketama, ReadbackRate: 1, ReadbackStats: st})
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testenv.Ctx(t, 60*time.Second)
	caller, err := c.Register(ctx, "w", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var batch []ops.Op
	for i := range n {
		batch = append(batch, ops.Set(fmt.Sprintf("k-%d", i), []byte(fmt.Sprintf("v-%d", i)), 0))
	}
	tok, err := caller.Submit(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		got := countsOf(st)
		return got.ok+got.superseded+got.full+st.Dropped(readback.DropError) >= n
	}, "read-backs %+v of %d writes", countsOf(st), n)
	if got := countsOf(st); got.ok == 0 || got.missing+got.stale+got.misplaced != 0 {
		t.Fatalf("read-backs %+v", got)
	}
}
