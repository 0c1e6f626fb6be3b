package pool_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/readback"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// changeKeys is how many keys the change tests write.
const changeKeys = 1000

// loadWriter submits rounds of sets of every key (the value is the
// round's number) until stopped, and remembers the last round applied.
type loadWriter struct {
	applied atomic.Int64 // the last round known applied
	stop    chan struct{}
	done    chan error
	once    sync.Once
	err     error
}

func startLoad(t *testing.T, c *client.Client) *loadWriter {
	t.Helper()
	w := &loadWriter{stop: make(chan struct{}), done: make(chan error, 1)}
	ctx := testenv.Ctx(t, 300*time.Second)
	caller, err := c.Register(ctx, "load", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		w.done <- func() error {
			for round := int64(1); ; round++ {
				select {
				case <-w.stop:
					return nil
				default:
				}
				var tok client.Token
				var batch []ops.Op
				for i := range changeKeys {
					batch = append(batch, ops.Set(changeKey(i), []byte(strconv.FormatInt(round, 10)), 0))
					if len(batch) == 250 {
						if tok, err = caller.Submit(ctx, batch...); err != nil {
							return err
						}
						batch = batch[:0]
					}
				}
				if err := c.WaitApplied(ctx, tok); err != nil {
					return err
				}
				w.applied.Store(round)
			}
		}()
	}()
	t.Cleanup(func() { w.finish(t) })
	return w
}

// finish stops the writer and returns the last round applied; calling it
// again returns the same.
func (w *loadWriter) finish(t *testing.T) int64 {
	t.Helper()
	w.once.Do(func() {
		close(w.stop)
		w.err = <-w.done
	})
	if w.err != nil {
		t.Fatalf("load writer: %v", w.err)
	}
	return w.applied.Load()
}

func changeKey(i int) string { return fmt.Sprintf("moving-%d", i) }

// readAll reads every key through mc and returns each key's round, 0 for
// a miss.
func readAll(t *testing.T, mc *memcache.Client) []int64 {
	t.Helper()
	out := make([]int64, changeKeys)
	for i := 0; i < changeKeys; i += 100 {
		var chunk []string
		for j := i; j < min(i+100, changeKeys); j++ {
			chunk = append(chunk, changeKey(j))
		}
		got, err := mc.GetMulti(chunk)
		if err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
			t.Fatal(err)
		}
		for j, k := range chunk {
			if it, ok := got[k]; ok {
				out[i+j], _ = strconv.ParseInt(string(it.Value), 10, 64)
			}
		}
	}
	return out
}

// waitTopologyApplied waits until the leader has moved the keys to the
// topology of epoch and writes with it.
func waitTopologyApplied(t *testing.T, c *client.Client, l keyspace.Layout, epoch uint64) {
	t.Helper()
	cli := c.Etcd()
	ctx := testenv.Ctx(t, 120*time.Second)
	testenv.Eventually(t, 120*time.Second, func() bool {
		a, found, err := topology.ReadApplied(ctx, cli, l)
		return err == nil && found && a.To == nil && a.Applied.Epoch == epoch
	}, "the leader did not apply topology epoch %d", epoch)
}

// TestTopologyChangeUnderLoad: a topology set while the leader applies a
// steady load (one server leaves, one joins) is taken without ending the
// leadership; the keys that move are moved. A reader of the new topology,
// from the moment the change is applied, finds every key with a value no
// older than the last round applied before the change and never sees a
// key's value go back; the final values are right; no server holds a key
// the new topology places elsewhere. The leader reads back every write it
// makes, across the change: none is found stale or misplaced.
func TestTopologyChangeUnderLoad(t *testing.T) {
	_, cli := testenv.Etcd(t)
	_, servers := startPool(t, 4)
	const ns = "change-load"
	l := keyspace.MustNew(ns)
	before, after := servers[:3], servers[1:]
	rb := &readback.Stats{}
	leader := testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "a", Memcached: addrs(before), Distribution: hashring.Ketama,
		ReadbackRate: 1, ReadbackStats: rb})
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	load := startLoad(t, c)
	testenv.Eventually(t, 60*time.Second, func() bool { return load.applied.Load() >= 2 }, "the load is not applied")
	ctx := testenv.Ctx(t, 120*time.Second)
	floor := load.applied.Load()
	next, err := topology.Set(ctx, cli, l, topology.Topology{Distribution: hashring.Ketama, Servers: after})
	if err != nil {
		t.Fatal(err)
	}
	waitTopologyApplied(t, c, l, next.Epoch)

	ring, err := hashring.New(next.Ring())
	if err != nil {
		t.Fatal(err)
	}
	reader := memcache.NewFromSelector(ring)
	t.Cleanup(func() { reader.Close() })
	seen := readAll(t, reader)
	for i, v := range seen {
		if v < floor {
			t.Fatalf("right after the change, %s reads round %d, older than round %d applied before it", changeKey(i), v, floor)
		}
	}
	// Reads while the load goes on under the new topology: no value goes
	// back.
	resumed := load.applied.Load()
	testenv.Eventually(t, 60*time.Second, func() bool {
		for i, v := range readAll(t, reader) {
			if v < seen[i] {
				t.Fatalf("%s went back from round %d to %d", changeKey(i), seen[i], v)
			}
			seen[i] = v
		}
		return load.applied.Load() >= resumed+3
	}, "the load is not applied after the change")
	last := load.finish(t)
	for i, v := range readAll(t, reader) {
		if v != last {
			t.Fatalf("%s ends at round %d, want %d", changeKey(i), v, last)
		}
	}
	if n := leader.Stats.Fenced.Load(); n != 0 {
		t.Fatalf("%d writes fenced: the leader lost its leadership", n)
	}
	assertPlaced(t, servers, ring)
	// The last round's read-backs are judged a moment after it.
	judged := func() uint64 {
		var n uint64
		for _, r := range readback.Results {
			n += rb.Count(r)
		}
		return n
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return rb.Count(readback.OK) > 0 }, "nothing read back ok: %d judged, %d missing, dropped %d superseded, %d queue full, %d errors",
		judged(), rb.Count(readback.Missing), rb.Dropped(readback.DropSuperseded), rb.Dropped(readback.DropQueueFull), rb.Dropped(readback.DropError))
	if st, mp := rb.Count(readback.Stale), rb.Count(readback.Misplaced); st+mp != 0 {
		t.Fatalf("read-back across the change: %d stale, %d misplaced of %d judged", st, mp, judged())
	}
	t.Logf("read-back across the change: %d judged, %d ok, %d missing, %d superseded or moved", judged(), rb.Count(readback.OK),
		rb.Count(readback.Missing), rb.Dropped(readback.DropSuperseded))
}

// assertPlaced checks that no server holds a key ring places elsewhere (a
// server not in ring holds none).
func assertPlaced(t *testing.T, servers []hashring.Server, ring *hashring.Ring) {
	t.Helper()
	for _, s := range servers {
		w, err := memfence.New(memfence.Config{Servers: []string{s.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		ks, err := w.Keys(t.Context())
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if owner := ring.Servers()[ring.Index(k.Key)].Addr; owner != s.Addr {
				t.Fatalf("%s still holds %q, which the new topology places on %s", s.Addr, k.Key, owner)
			}
		}
	}
}

// TestTopologyChangeRemovesStaleCopies is the A→B→A case: a server joining
// the pool holds copies from an earlier topology (planted here, stamped
// with the leader's own term, as a change that moved nothing would have
// left them). After the change, a reader of the new topology finds every
// live key with its latest value, not the stale copy, and a deleted key as
// a miss; and after changing back, the same holds.
func TestTopologyChangeRemovesStaleCopies(t *testing.T) {
	_, cli := testenv.Etcd(t)
	_, servers := startPool(t, 3)
	const ns = "change-stale"
	l := keyspace.MustNew(ns)
	small, large := servers[:2], servers
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "a", Memcached: addrs(small), Distribution: hashring.Ketama})
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := testenv.Ctx(t, 120*time.Second)
	caller, err := c.Register(ctx, "w", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	live := func(i int) bool { return i%2 == 0 } // odd keys get deleted
	var sets, dels []ops.Op
	for i := range changeKeys {
		sets = append(sets, ops.Set(changeKey(i), []byte("2"), 0))
		if !live(i) {
			dels = append(dels, ops.Delete(changeKey(i)))
		}
	}
	var tok client.Token
	for _, batch := range [][]ops.Op{sets[:500], sets[500:], dels} {
		if tok, err = caller.Submit(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	term := leaderTerm(t, c, ns)
	joining, err := memfence.New(memfence.Config{Servers: []string{large[2].Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { joining.Close() })
	for i := range changeKeys {
		if err := joining.Set(ctx, changeKey(i), []byte("1"), 0, term); err != nil {
			t.Fatal(err)
		}
	}
	check := func(topo topology.Topology) {
		t.Helper()
		ring, err := hashring.New(topo.Ring())
		if err != nil {
			t.Fatal(err)
		}
		reader := memcache.NewFromSelector(ring)
		defer reader.Close()
		for i, v := range readAll(t, reader) {
			switch {
			case live(i) && v != 2:
				t.Fatalf("epoch %d: %s reads round %d, want 2", topo.Epoch, changeKey(i), v)
			case !live(i) && v != 0:
				t.Fatalf("epoch %d: deleted %s reads round %d, want a miss", topo.Epoch, changeKey(i), v)
			}
		}
		assertPlaced(t, servers, ring)
	}
	grown, err := topology.Set(ctx, cli, l, topology.Topology{Distribution: hashring.Ketama, Servers: large})
	if err != nil {
		t.Fatal(err)
	}
	waitTopologyApplied(t, c, l, grown.Epoch)
	check(grown)
	shrunk, err := topology.Set(ctx, cli, l, topology.Topology{Distribution: hashring.Ketama, Servers: small})
	if err != nil {
		t.Fatal(err)
	}
	waitTopologyApplied(t, c, l, shrunk.Epoch)
	check(shrunk)
	// The leader still leads and applies under the topology it took.
	if tok, err = caller.Submit(ctx, ops.Set(changeKey(0), []byte("3"), 0)); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	ring, _ := hashring.New(shrunk.Ring())
	reader := memcache.NewFromSelector(ring)
	defer reader.Close()
	if it, err := reader.Get(changeKey(0)); err != nil || string(it.Value) != "3" || memfence.TermOf(it.Flags) != term {
		t.Fatalf("after the changes: %+v, %v; want 3 under term %d", it, err, term)
	}
}

// leaderTerm returns the term of the namespace's leader.
func leaderTerm(t *testing.T, c *client.Client, ns string) uint32 {
	t.Helper()
	in, err := inspect.New(c.Etcd(), ns)
	if err != nil {
		t.Fatal(err)
	}
	st, err := in.Status(testenv.Ctx(t, 30*time.Second))
	if err != nil || st.Term == 0 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	return uint32(st.Term)
}
