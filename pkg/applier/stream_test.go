package applier_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

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
// when it does. The node's watch reads on only once the compaction is done
// (stallingWatcher): etcd's resync loop does not wait for the hook.
func TestCompactionWhileEventsAreHeldLosesNoBatch(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	caller := e.register(t, "svc")
	const n = 3000 // batches, one per transaction
	last := e.rotatingBatches(t, caller, n, 7)

	var (
		compactOnce  sync.Once
		compactedErr = make(chan error, 1)
		compacted    = make(chan struct{}) // closed once the compaction returned
		compactedSaw = make(chan int, 1)   // events held when the compacted response came
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
					close(compacted)
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
	cli := testenv.Client(t, e.cli.Endpoints())
	cli.Watcher = &stallingWatcher{Watcher: cli.Watcher, layout: e.layout, resume: compacted}
	nd := testenv.StartNode(t, node.Config{Etcd: cli, Layout: e.layout, NodeID: "n1", Memcached: []string{e.mc.Addr}, MaxInboxBatches: 8, Hooks: hooks})
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

// stallingWatcher passes every watch through but those of the pending
// batches (a standby's, from the watermark key, and a leader's, from the
// takeover mark): each of those is read up to its first response with
// events, and read on from there only once resume is closed, with a new
// watch from the revision after that response.
//
// etcd reads a watch that starts in the past on from its history in its
// resync loop, up to 1000 revisions every 100 ms, whether or not the
// client has taken what it sent, and tells a watch of a compaction only
// while it is still reading history: once it has caught up, a compaction of
// what it read is never reported to it. A compaction made when the first
// response arrives thus races that loop, which wins when the machine is busy
// (the watch then catches up, and its applier waits for room that the held
// writes never make). A watch from the revision after the first response,
// opened once the compaction is done, is answered with the compaction,
// exactly as etcd answers the watch it had not caught up yet.
type stallingWatcher struct {
	clientv3.Watcher
	layout keyspace.Layout
	resume <-chan struct{}
}

func (w *stallingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	select {
	case <-w.resume:
		return w.Watcher.Watch(ctx, key, opts...)
	default:
	}
	if key != w.layout.Applied() && key != w.layout.TakeoverMark() {
		return w.Watcher.Watch(ctx, key, opts...)
	}
	out := make(chan clientv3.WatchResponse)
	fctx, cancel := context.WithCancel(ctx)
	first := w.Watcher.Watch(fctx, key, opts...)
	go func() {
		defer close(out)
		defer cancel()
		forward := func(wr clientv3.WatchResponse) bool {
			select {
			case out <- wr:
				return true
			case <-ctx.Done():
				return false
			}
		}
		var next int64
		for wr := range first {
			if !forward(wr) {
				return
			}
			if len(wr.Events) > 0 {
				next = wr.Events[len(wr.Events)-1].Kv.ModRevision + 1
				break
			}
		}
		cancel()
		for range first { // what etcd sent after the first response is read again below
		}
		if next == 0 {
			return // the watch ended before it read anything
		}
		select {
		case <-w.resume:
		case <-ctx.Done():
			return
		}
		for wr := range w.Watcher.Watch(ctx, key, append(slices.Clone(opts), clientv3.WithRev(next))...) {
			if !forward(wr) {
				return
			}
		}
	}()
	return out
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
// follows new batches alike, and when etcd has compacted the history before
// the node starts, so that it reads the pending batches with a range read
// (etcd returns a revision's keys in key order). Their ids sort against
// their index, so an order taken from the keys would be wrong.
func TestBatchesOfOneTransactionApplyInIndexOrder(t *testing.T) {
	for _, mode := range []string{"replay", "follow", "compacted"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, ops.Limits{})
			caller := e.register(t, "svc")
			var compactedSeen atomic.Bool
			hooks := applier.Hooks{WatchResponse: func(_, _ int, err error) {
				if errors.Is(err, applier.ErrHistoryCompacted) {
					compactedSeen.Store(true)
				}
			}}
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
			switch mode {
			case "compacted":
				if _, err := e.cli.Compact(e.ctx, resp.Header.Revision); err != nil {
					t.Fatal(err)
				}
				e.startNode(t, "n1", hooks, ops.Limits{})
			case "replay":
				e.startNode(t, "n1", applier.Hooks{}, ops.Limits{})
			}
			// Applied once no batch is pending: the watermark is checked
			// below, and an order that is wrong may also leave it short.
			testenv.Eventually(t, 30*time.Second, func() bool { return e.pending(t) == 0 }, "the batches applied")
			if mode == "compacted" && !compactedSeen.Load() {
				t.Fatal("the leader's watch never reported the compaction: the range read did not run")
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
