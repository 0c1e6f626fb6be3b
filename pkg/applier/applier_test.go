package applier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

const ns = "t"

type env struct {
	cli    *clientv3.Client
	layout keyspace.Layout
	mc     *testenv.Memcached
	client *client.Client
	ctx    context.Context
}

func newEnv(t *testing.T, limits ops.Limits, memcachedArgs ...string) *env {
	_, cli := testenv.Etcd(t)
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	return &env{cli: cli, layout: keyspace.MustNew(ns), mc: testenv.StartMemcached(t, memcachedArgs...), client: c, ctx: testenv.Ctx(t, 90*time.Second)}
}

func (e *env) startNode(t *testing.T, id string, hooks applier.Hooks, limits ops.Limits) *testenv.Node {
	return testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: id, Memcached: []string{e.mc.Addr}, Hooks: hooks, Limits: limits})
}

// writer returns a fenced writer to the env's memcached, closed when t ends.
func (e *env) writer(t *testing.T) *memfence.Writer {
	w, err := memfence.New(memfence.Config{Servers: []string{e.mc.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func (e *env) register(t *testing.T, name string) *client.Caller {
	c, err := e.client.Register(e.ctx, name, client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (e *env) value(t *testing.T, key string) (string, bool) {
	t.Helper()
	it, err := memcache.New(e.mc.Addr).Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(it.Value), true
}

// A record that cannot be decoded neither crashes nor stalls the leader: it
// is set aside under the quarantine prefix and reported, and later
// operations are applied.
func TestUndecodableRecordsAreSetAside(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	n := e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
	caller := e.register(t, "svc")
	// Records written by something else: garbage under a well-formed key, a
	// key that is not a batch key, and a valid record whose key lies about it.
	valid := (&ops.Batch{Name: "other", Incarnation: 1, ID: "x", Ops: []ops.Op{ops.Set("k", []byte("v"), 0)}}).Encode()
	for key, val := range map[string]string{
		e.layout.Batch("svc", caller.Incarnation(), "junk"): "not a record",
		e.layout.OpsPrefix() + "stray":                      "x",
		e.layout.Batch("svc", caller.Incarnation(), "lies"): string(valid),
	} {
		if _, err := e.cli.Put(e.ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := caller.Set(e.ctx, "after", []byte("ok"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.value(t, "after"); v != "ok" {
		t.Fatalf("operation after the bad records: %q", v)
	}
	if _, ok := e.value(t, "k"); ok {
		t.Fatal("the mislabelled record was applied")
	}
	in, _ := inspect.New(e.cli, ns)
	q, err := in.Quarantined(e.ctx)
	if err != nil || len(q) != 3 {
		t.Fatalf("quarantined = %+v, %v; want 3 records", q, err)
	}
	// The counter moves once the leader has read its commit's reply, which
	// may come after a reader saw the commit.
	testenv.Eventually(t, 10*time.Second, func() bool { return n.Stats.Quarantined.Load() == 3 },
		"Stats.Quarantined = 3")
	st, _ := in.Status(e.ctx)
	if st.PendingBatches != 0 || st.Quarantined != 3 {
		t.Fatalf("status %+v", st)
	}
}

// A round with many records set aside is committed in several
// transactions: each bad record adds a quarantine put to its delete, and no
// transaction may pass etcd's operation limit.
func TestManyRecordsSetAsideInOneRoundAreCommitted(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	const bad = applier.MaxTxnOps
	txn := make([]clientv3.Op, 0, bad)
	for i := range bad {
		txn = append(txn, clientv3.OpPut(e.layout.Batch("svc", caller.Incarnation(), fmt.Sprintf("junk-%d", i)), "not a record"))
	}
	// One transaction: the node reads them all in its first round.
	if _, err := e.cli.Txn(e.ctx).Then(txn...).Commit(); err != nil {
		t.Fatal(err)
	}
	tok, err := caller.Set(e.ctx, "after", []byte("ok"), 0)
	if err != nil {
		t.Fatal(err)
	}
	n := e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	in, _ := inspect.New(e.cli, ns)
	q, err := in.Quarantined(e.ctx)
	if err != nil || len(q) != bad {
		t.Fatalf("%d records set aside, %v; want %d", len(q), err, bad)
	}
	// The watermark is visible before the applier counts its commit.
	testenv.Eventually(t, 10*time.Second, func() bool { return n.Stats.Commits.Load() >= 3 },
		"%d commits; %d bad records need at least 3 transactions", n.Stats.Commits.Load(), bad)
}

// An operation memcached refuses for good (here: bigger than its -I) is set
// aside; it does not block the operations after it.
func TestItemMemcachedRefusesIsSetAside(t *testing.T) {
	limits := ops.Limits{MaxItemBytes: 2 << 20, MaxBatchBytes: 3 << 20}
	e := newEnv(t, limits, "-I", "1m")
	n := e.startNode(t, "n1", applier.Hooks{}, limits)
	caller := e.register(t, "svc")
	if _, err := caller.Set(e.ctx, "big", bytes.Repeat([]byte("x"), 3<<19), 0); err != nil {
		t.Fatal(err)
	}
	tok, err := caller.Set(e.ctx, "small", []byte("ok"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.value(t, "small"); v != "ok" {
		t.Fatalf("small = %q", v)
	}
	// The watermark is visible before the applier counts what its commit
	// set aside.
	testenv.Eventually(t, 10*time.Second, func() bool { return n.Stats.Quarantined.Load() >= 1 },
		"Quarantined = %d, want 1", n.Stats.Quarantined.Load())
	if q := n.Stats.Quarantined.Load(); q != 1 {
		t.Fatalf("Quarantined = %d, want 1", q)
	}
}

// While memcached is down operations stay pending; they are applied when it
// is back, and WaitApplied (G8) returns only then.
func TestMemcachedOutageLeavesOperationsPending(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	n := e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
	caller := e.register(t, "svc")
	e.mc.Stop()
	var last tokenseq.Token
	for i := range 5 {
		tok, err := caller.Set(e.ctx, "k", []byte{'0' + byte(i)}, 0)
		if err != nil {
			t.Fatal(err)
		}
		last = tok
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return n.Stats.Retries.Load() >= 2 }, "leader never retried")
	in, _ := inspect.New(e.cli, ns)
	st, err := in.Status(e.ctx)
	if err != nil || st.PendingOps == 0 || !st.Applied.Less(last) {
		t.Fatalf("status during outage: %+v %v", st, err)
	}
	// WaitApplied does not return while the leader keeps failing to write:
	// it is still waiting once the leader has failed again after the wait
	// was started, and returns only when its context ends.
	retries := n.Stats.Retries.Load()
	wctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- caller.WaitApplied(wctx, last) }()
	testenv.Eventually(t, 20*time.Second, func() bool { return n.Stats.Retries.Load() > retries },
		"the leader did not retry again during the outage")
	select {
	case err := <-waited:
		t.Fatalf("WaitApplied returned during the outage: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-waited:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitApplied during the outage, cancelled: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitApplied did not return after its context was cancelled")
	}
	e.mc.Start()
	if err := caller.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.value(t, "k"); v != "4" {
		t.Fatalf("k = %q, want 4", v)
	}
}

// After a failover the new leader writes only the newest pending operation
// per key of its replay head, so a value its predecessor already wrote
// never goes back (G6).
func TestReplayWritesOnlyNewestPerKey(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	var toks []tokenseq.Token
	for i := range 3 {
		tok, err := caller.Submit(e.ctx, ops.Set("k", []byte{'a' + byte(i)}, 0), ops.Set("other", []byte{'a' + byte(i)}, 0))
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	// A predecessor wrote the newest value, then died before recording it.
	if err := memcache.New(e.mc.Addr).Set(&memcache.Item{Key: "k", Value: []byte("c")}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var writes []applier.Write
	n := e.startNode(t, "n1", applier.Hooks{AfterWrite: func(w applier.Write) {
		mu.Lock()
		defer mu.Unlock()
		writes = append(writes, w)
	}}, ops.Limits{})
	if err := caller.WaitApplied(e.ctx, toks[2]); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 2 {
		t.Fatalf("wrote %d operations, want 2 (newest per key): %+v", len(writes), writes)
	}
	for _, w := range writes {
		if w.Token != toks[2] || string(w.Op.Value) != "c" {
			t.Fatalf("replay wrote an older operation: %+v", w)
		}
	}
	if n.Stats.Skipped.Load() != 4 {
		t.Fatalf("Skipped = %d, want 4", n.Stats.Skipped.Load())
	}
}

// A batch is applied in the order given, and within a run of batches only
// the last write to a key is made.
func TestBatchOrderWithinBatch(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
	caller := e.register(t, "svc")
	tok, err := caller.Submit(e.ctx, ops.Set("k", []byte("1"), 0), ops.Delete("k"), ops.Set("k", []byte("3"), 0), ops.Set("j", []byte("x"), 0), ops.Delete("j"))
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.value(t, "k"); v != "3" {
		t.Fatalf("k = %q", v)
	}
	if _, ok := e.value(t, "j"); ok {
		t.Fatal("j should be deleted")
	}
}

// A replay's head (the first ReplayHeadBatches pending batches) is written
// whole before its commit: the watermark must not pass an operation skipped
// in favour of a newer one on its key before that newer one is in memcached
// (G8, G7). Batches past the head are applied in later rounds.
func TestReplayCommitsOnlyAfterTheWholeHeadIsWritten(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	n := applier.ReplayHeadBatches + 40
	hot := map[int]bool{0: true, applier.ReplayHeadBatches - 1: true, n - 1: true}
	var last tokenseq.Token
	for i := range n {
		batch := []ops.Op{ops.Set(fmt.Sprintf("k%d", i), []byte("v"), 0)}
		if hot[i] {
			batch = append(batch, ops.Set("hot", []byte(fmt.Sprint(i)), 0))
		}
		tok, err := caller.Submit(e.ctx, batch...)
		if err != nil {
			t.Fatal(err)
		}
		last = tok
	}
	var mu sync.Mutex
	var hotWrites []string
	var wmAtHotWrites []tokenseq.Token
	e.startNode(t, "n1", applier.Hooks{BeforeWrite: func(ctx context.Context, w applier.Write) {
		if w.Op.Key != "hot" {
			return
		}
		wm, _, err := tokenseq.Watermark(ctx, e.cli, e.layout)
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		defer mu.Unlock()
		hotWrites = append(hotWrites, string(w.Op.Value))
		wmAtHotWrites = append(wmAtHotWrites, wm)
	}}, ops.Limits{})
	if err := caller.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The head's newest hot write, then the one past the head.
	want := []string{fmt.Sprint(applier.ReplayHeadBatches - 1), fmt.Sprint(n - 1)}
	if !slices.Equal(hotWrites, want) {
		t.Fatalf("hot writes %v, want %v", hotWrites, want)
	}
	if !wmAtHotWrites[0].IsZero() {
		t.Fatalf("watermark was %v when the head's newest hot write was made; want no commit before it", wmAtHotWrites[0])
	}
	if v, _ := e.value(t, "hot"); v != fmt.Sprint(n-1) {
		t.Fatalf("hot = %q", v)
	}
}

// A round's commit runs while the next round is written, but no further:
// whenever an operation is written, at most ReplayHeadBatches batches past
// the committed watermark have been taken for writing, so a successor's
// replay head covers everything a leader may have written (G6).
func TestWritesStayWithinTheReplayHeadOfTheWatermark(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	const n = 5*applier.ReplayHeadBatches + 7
	toks := make([]tokenseq.Token, n)
	for i := range n {
		tok, err := caller.Set(e.ctx, fmt.Sprintf("k%d", i), []byte("v"), 0)
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = tok
	}
	var mu sync.Mutex
	var farthest int // the most batches past the watermark seen at a write
	var measured int // writes whose distance from the watermark was read
	e.startNode(t, "n1", applier.Hooks{BeforeWrite: func(ctx context.Context, w applier.Write) {
		wm, _, err := tokenseq.Watermark(ctx, e.cli, e.layout)
		if err != nil {
			return // leadership ended; nothing to check
		}
		// Batches after the watermark up to and including this one.
		past := 0
		for _, tok := range toks {
			if wm.Less(tok) && !w.Token.Less(tok) {
				past++
			}
		}
		mu.Lock()
		farthest = max(farthest, past)
		measured++
		mu.Unlock()
	}}, ops.Limits{})
	if err := caller.WaitApplied(e.ctx, toks[n-1]); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if measured < n || farthest == 0 {
		t.Fatalf("the distance from the watermark was read at %d of %d writes (farthest %d)", measured, n, farthest)
	}
	if farthest > applier.ReplayHeadBatches {
		t.Fatalf("a write was made %d batches past the watermark; the replay head covers %d", farthest, applier.ReplayHeadBatches)
	}
	for i := range n {
		if _, ok := e.value(t, fmt.Sprintf("k%d", i)); !ok {
			t.Fatalf("k%d was not applied", i)
		}
	}
}

// rotatingBatches submits n batches one by one: batch i sets k<i mod keys>
// to i and u<i> to "v". It returns the last token.
func (e *env) rotatingBatches(t *testing.T, caller *client.Caller, n, keys int) tokenseq.Token {
	t.Helper()
	var last tokenseq.Token
	for i := range n {
		tok, err := caller.Submit(e.ctx, ops.Set(fmt.Sprintf("k%d", i%keys), []byte(fmt.Sprint(i)), 0), ops.Set(fmt.Sprintf("u%d", i), []byte("v"), 0))
		if err != nil {
			t.Fatal(err)
		}
		last = tok
	}
	return last
}

// checkRotatingBatches checks that every operation of rotatingBatches(n,
// keys) was applied once, newest last: each k<i> holds the last batch that
// set it, and every u<i> is there. before is the operations applied or
// skipped before those batches.
func (e *env) checkRotatingBatches(t *testing.T, nd *testenv.Node, n, keys int, before uint64) {
	t.Helper()
	for i := range keys {
		want := n - 1 - (n-1-i)%keys
		if v, _ := e.value(t, fmt.Sprintf("k%d", i)); v != fmt.Sprint(want) {
			t.Fatalf("k%d = %q, want %d", i, v, want)
		}
	}
	for i := range n {
		if _, ok := e.value(t, fmt.Sprintf("u%d", i)); !ok {
			t.Fatalf("u%d was not applied", i)
		}
	}
	if got := nd.Stats.Applied.Load() + nd.Stats.Skipped.Load() - before; got != uint64(2*n) {
		t.Fatalf("applied+skipped = %d, want %d (each operation once)", got, 2*n)
	}
}

// A backlog much larger than the leader's inbox is streamed: what the watch
// reads is handed over as room appears in the inbox, and every batch is
// applied once, in order.
func TestBacklogLargerThanTheInboxIsStreamed(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	const n = 300
	last := e.rotatingBatches(t, caller, n, 7)
	nd := testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", Memcached: []string{e.mc.Addr}, MaxInboxBatches: 8})
	if err := caller.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	e.checkRotatingBatches(t, nd, n, 7, 0)
}

// When batches keep coming while the applier cannot write (memcached is
// down), the applier falls behind its watch: it cancels it, so the etcd
// client does not buffer what it has no room for, and opens it again where
// it stopped once there is room. Every operation is applied once, and the
// newest value of each key wins.
func TestApplierBehindItsWatchOpensItAgainWithoutLosingBatches(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	nd := testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", Memcached: []string{e.mc.Addr}, MaxInboxBatches: 8})
	caller := e.register(t, "svc")
	// The leader's watch is caught up before the outage.
	tok, err := caller.Set(e.ctx, "warm", []byte("up"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	before := nd.Stats.Applied.Load() + nd.Stats.Skipped.Load()
	e.mc.Stop()
	// One transaction per batch: the watch, caught up, sends each as its
	// own response.
	const n = 120
	last := e.rotatingBatches(t, caller, n, 5)
	e.mc.Start()
	if err := caller.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	if w := nd.Stats.Watches.Load(); w < 2 {
		t.Fatalf("the applier read from %d watch(es); it should have cancelled the one it fell behind and opened another", w)
	}
	e.checkRotatingBatches(t, nd, n, 5, before)
}

// When etcd compacts the history a leader's watch is still reading, while
// events that watch read wait for room in the inbox, those events are
// handed over first, and the batches after them are read with a range read:
// every operation is applied once, the newest value of each key winning.
//
// The backlog is more revisions than etcd sends in a response (1000), so the
// watch is still reading history when the first response arrives; the
// WatchResponse hook compacts etcd then, and writes wait until the
// compacted response has come, so that what the watch read is still held
// when it does.
func TestCompactionWhileEventsAreHeldLosesNoBatch(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	const n = 3000 // batches, one per transaction
	last := e.rotatingBatches(t, caller, n, 7)

	var (
		compactOnce  sync.Once
		compactedErr = make(chan error, 1)
		compactedSaw = make(chan int, 1) // events held when the compacted response came
		released     = make(chan struct{})
	)
	hooks := applier.Hooks{
		WatchResponse: func(events, held int, err error) {
			if err != nil {
				if errors.Is(err, applier.ErrHistoryCompacted) {
					select {
					case compactedSaw <- held:
					default:
					}
				}
				return
			}
			if held > 0 {
				compactOnce.Do(func() {
					_, err := e.cli.Compact(e.ctx, last.Revision)
					compactedErr <- err
				})
			}
		},
		BeforeWrite: func(ctx context.Context, _ applier.Write) {
			select {
			case <-released:
			case <-ctx.Done():
			}
		},
	}
	nd := testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", Memcached: []string{e.mc.Addr}, MaxInboxBatches: 8, Hooks: hooks})
	select {
	case err := <-compactedErr:
		if err != nil {
			t.Fatalf("compact: %v", err)
		}
	case <-e.ctx.Done():
		t.Fatal("the leader's watch never held events to compact under")
	}
	select {
	case held := <-compactedSaw:
		if held == 0 {
			t.Fatal("the compacted response came with no events held: the path under test did not run")
		}
	case <-e.ctx.Done():
		t.Fatal("the leader's watch never reported the compaction")
	}
	close(released)
	if err := caller.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	e.checkRotatingBatches(t, nd, n, 7, 0)
}

// When etcd has compacted the history back to the watermark, a new leader
// reads the pending batches with a range read, and applies them all.
func TestReplayAfterCompactionReadsPendingBatches(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	first := e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
	tok, err := caller.Set(e.ctx, "k", []byte("applied"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	first.Stop(t)
	var last tokenseq.Token
	for i := range 20 {
		if last, err = caller.Set(e.ctx, "k", []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.cli.Compact(e.ctx, last.Revision); err != nil {
		t.Fatal(err)
	}
	e.startNode(t, "n2", applier.Hooks{}, ops.Limits{})
	if err := caller.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.value(t, "k"); v != "19" {
		t.Fatalf("k = %q, want 19", v)
	}
	in, _ := inspect.New(e.cli, ns)
	if st, err := in.Status(e.ctx); err != nil || st.PendingBatches != 0 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// Batches stored by one transaction (group commit) share a revision and are
// applied in the order of their index, on a leader's replay and while it
// follows new batches alike. Their ids sort against their index, so an order
// taken from the keys would be wrong.
func TestBatchesOfOneTransactionApplyInIndexOrder(t *testing.T) {
	for _, mode := range []string{"replay", "follow"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, ops.Limits{})
			caller := e.register(t, "svc")
			if mode == "follow" {
				e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
				tok, err := caller.Set(e.ctx, "probe", []byte("p"), 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := caller.WaitApplied(e.ctx, tok); err != nil {
					t.Fatal(err)
				}
			}
			ids := []string{"z", "y", "x"}
			var puts []clientv3.Op
			for i, id := range ids {
				b := &ops.Batch{Name: "svc", Incarnation: caller.Incarnation(), ID: id, Index: uint32(i),
					Ops: []ops.Op{ops.Set("k", []byte(fmt.Sprintf("v%d", i)), 0), ops.Set("k-"+id, []byte(id), 0)}}
				puts = append(puts, clientv3.OpPut(e.layout.Batch("svc", caller.Incarnation(), id), string(b.Encode())))
			}
			resp, err := e.cli.Txn(e.ctx).Then(puts...).Commit()
			if err != nil {
				t.Fatal(err)
			}
			last := tokenseq.Token{Revision: resp.Header.Revision, Index: uint32(len(ids) - 1)}
			if mode == "replay" {
				e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
			}
			if err := caller.WaitApplied(e.ctx, last); err != nil {
				t.Fatal(err)
			}
			if v, _ := e.value(t, "k"); v != "v2" {
				t.Fatalf("k = %q, want the value of index 2", v)
			}
			for _, id := range ids {
				if v, _ := e.value(t, "k-"+id); v != id {
					t.Fatalf("k-%s = %q", id, v)
				}
			}
			wm, _, err := tokenseq.Watermark(e.ctx, e.cli, e.layout)
			if err != nil || wm != last {
				t.Fatalf("watermark %s, %v; want %s", wm, err, last)
			}
		})
	}
}

// A standby follows the pending batches while its node campaigns, drops
// those the watermark covers as the leader moves it, and hands the rest to
// the applier when its node wins: they are applied, in order, without
// being read again, and what the watermark covered is not written.
func TestStandbyHandsOverThePendingBatches(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	var toks []tokenseq.Token
	submit := func(n int) {
		for range n {
			i := len(toks)
			tok, err := caller.Submit(e.ctx, ops.Set(fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), 0), ops.Set("last", []byte(fmt.Sprint(i)), 0))
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tok)
		}
	}
	submit(5)
	stats := &applier.Stats{}
	cfg := applier.Config{Etcd: e.cli, Layout: e.layout, Memcached: e.writer(t), Logger: testenv.Logger(), Stats: stats}
	sb := applier.StartStandby(e.ctx, cfg)
	t.Cleanup(sb.Stop)
	testenv.Eventually(t, 10*time.Second, func() bool { return int(stats.StandbyHeld.Load()) == 5 }, "the standby holds the 5 pending batches")
	submit(3)
	testenv.Eventually(t, 10*time.Second, func() bool { return int(stats.StandbyHeld.Load()) == 8 }, "the standby holds 8 pending batches")
	// A leader applied the first three: the standby drops them.
	if _, err := e.cli.Put(e.ctx, e.layout.Applied(), toks[2].String()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return int(stats.StandbyHeld.Load()) == 5 }, "the standby drops the batches the watermark covers")

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- election.Run(ctx, election.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", LeaseTTL: 5 * time.Second, Logger: testenv.Logger()},
			func(l *election.Leadership) error { return sb.Run(l.Context(), l) })
	}()
	submit(2) // after the standby was taken over, or before: either way applied
	if err := caller.WaitApplied(e.ctx, toks[len(toks)-1]); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := stats.FromStandby.Load(); got < 5 || got > 7 {
		t.Fatalf("%d batches came from the standby, want 5 (or 6 or 7, had one or both of the last two, each its own transaction, arrived before the takeover)", got)
	}
	for i := range toks {
		_, ok := e.value(t, fmt.Sprintf("k%d", i))
		if ok != (i >= 3) {
			t.Fatalf("k%d written = %v; want only batches after the watermark written", i, ok)
		}
	}
	if v, _ := e.value(t, "last"); v != fmt.Sprint(len(toks)-1) {
		t.Fatalf("last = %q, want %d", v, len(toks)-1)
	}
}

// TestStandbyBehindCountsInsteadOfReopeningItsWatch checks that a standby
// with more batches pending than it holds stops following and does not
// open its watch again (each opening makes etcd read the backlog from its
// history) until a leader has applied the backlog down to half of what it
// holds.
func TestStandbyBehindCountsInsteadOfReopeningItsWatch(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	var last tokenseq.Token
	for i := range 20 {
		tok, err := caller.Set(e.ctx, fmt.Sprintf("k%d", i), []byte("v"), 0)
		if err != nil {
			t.Fatal(err)
		}
		last = tok
	}
	stats := &applier.Stats{}
	cfg := applier.Config{Etcd: e.cli, Layout: e.layout, Memcached: e.writer(t),
		Logger: testenv.Logger(), MaxInboxBatches: 8, Stats: stats}
	sb := applier.StartStandby(e.ctx, cfg)
	t.Cleanup(sb.Stop)
	testenv.Eventually(t, 10*time.Second, func() bool { return stats.StandbyCounts.Load() >= 3 },
		"the standby, behind, counts the pending batches")
	if n := stats.StandbyWatches.Load(); n != 1 {
		t.Fatalf("the standby opened its watch %d times while 20 batches were pending, want 1", n)
	}
	if n := int(stats.StandbyHeld.Load()); n != 0 {
		t.Fatalf("the standby holds %d batches while behind, want 0", n)
	}
	e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
	if err := caller.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return stats.StandbyWatches.Load() == 2 },
		"the standby follows again once the backlog is applied")
}
