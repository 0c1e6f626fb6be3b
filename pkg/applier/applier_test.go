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

// pending counts the batches stored and not applied yet.
func (e *env) pending(t *testing.T) int64 {
	t.Helper()
	resp, err := e.cli.Get(e.ctx, e.layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
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
