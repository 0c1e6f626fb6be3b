package pool_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// errEarlierFenced is the earlier version's refusal: the item's flags,
// read as a term, are above the writer's.
var errEarlierFenced = errors.New("fenced (earlier layout)")

// earlierWrite writes key as a node before the flags layout did: the whole
// term as the flags, and the flags compared as the term.
func earlierWrite(mc *memcache.Client, key, value string, term uint32) error {
	for range 64 {
		it, err := mc.Get(key)
		if errors.Is(err, memcache.ErrCacheMiss) {
			err = mc.Add(&memcache.Item{Key: key, Value: []byte(value), Flags: term})
			if errors.Is(err, memcache.ErrNotStored) {
				continue
			}
			return err
		} else if err != nil {
			return err
		}
		if it.Flags > term {
			return fmt.Errorf("%w: %s has flags %d, writer term %d", errEarlierFenced, key, it.Flags, term)
		}
		it.Value, it.Flags = []byte(value), term
		if err := mc.CompareAndSwap(it); errors.Is(err, memcache.ErrCASConflict) {
			continue
		} else {
			return err
		}
	}
	return errors.New("contended")
}

// earlierLeader wins the election as a node of the earlier version would,
// runs write with its term while it leads, and resigns.
func earlierLeader(t *testing.T, cli *clientv3.Client, l keyspace.Layout, id string, write func(term uint32)) uint32 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	won := make(chan uint32, 1)
	done := make(chan error, 1)
	go func() {
		done <- election.Run(ctx, election.Config{Etcd: cli, Layout: l, NodeID: id, LeaseTTL: 2 * time.Second, Logger: testenv.Logger()},
			func(le *election.Leadership) error {
				write(uint32(le.Term))
				won <- uint32(le.Term)
				<-le.Context().Done()
				return nil
			})
	}()
	var term uint32
	select {
	case term = <-won:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not win within 30s", id)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("%s: %v", id, err)
	}
	return term
}

// TestRollingUpgradeKeepsFencing: leaders of the earlier version (the
// whole term as the flags) and of this one (the term in the high 16 bits)
// take turns on one namespace, with operations pending across the
// changes. A node of this version compares terms, not flags: it
// overwrites items of older terms in either layout, and as a former
// leader it is fenced by an item a newer leader of the earlier version
// wrote, whose flags (the small term) are below its own flags. A leader of
// the earlier version is fenced by every item this version wrote, which
// is safe. In the end every key holds its last value under the last
// term, in this layout, and no write of this version's leaders was fenced.
func TestRollingUpgradeKeepsFencing(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ms, servers := startPool(t, 1)
	const ns = "upgrade"
	l := keyspace.MustNew(ns)
	mc := memcache.New(ms[0].Addr)
	t.Cleanup(func() { mc.Close() })
	key := func(i int) string { return fmt.Sprintf("u-%02d", i) }
	const n = 40
	ctx := testenv.Ctx(t, 120*time.Second)

	// 1. An earlier-version leader writes every key.
	t1 := earlierLeader(t, cli, l, "old-1", func(term uint32) {
		for i := range n {
			if err := earlierWrite(mc, key(i), "old-1", term); err != nil {
				t.Fatal(err)
			}
		}
	})
	// 2. A node of this version leads and writes the first half.
	a := testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "new-a", Memcached: addrs(servers)})
	first := map[string]string{}
	for i := range n / 2 {
		first[key(i)] = "new-a"
	}
	waitApplied(t, cli, ns, submitKeys(t, cli, ns, first))
	a.Stop(t)
	t2 := leaderTermOf(t, cli, ns)
	if t2 <= t1 {
		t.Fatalf("terms %d then %d", t1, t2)
	}
	for i := range n {
		it, err := mc.Get(key(i))
		want, wantFlags := "old-1", t1
		if i < n/2 {
			want, wantFlags = "new-a", memfence.Flags(t2)
		}
		if err != nil || string(it.Value) != want || it.Flags != wantFlags {
			t.Fatalf("%s after the first new leader: %+v, %v; want %q with flags %d", key(i), it, err, want, wantFlags)
		}
	}
	// Operations accepted while no leader runs stay pending until the last
	// leader below.
	last := map[string]string{}
	for i := range n {
		last[key(i)] = "new-b"
	}
	pending := submitKeys(t, cli, ns, last)

	// 3. An earlier-version leader again: it overwrites the items of term
	// t1 and is fenced by those this version wrote.
	t3 := earlierLeader(t, cli, l, "old-2", func(term uint32) {
		for i := range n {
			err := earlierWrite(mc, key(i), "old-2", term)
			switch {
			case i < n/2 && !errors.Is(err, errEarlierFenced):
				t.Errorf("the earlier version over %s (written under term %d in the new layout): %v, want fenced", key(i), t2, err)
			case i >= n/2 && err != nil:
				t.Errorf("the earlier version over %s (term %d, earlier layout): %v", key(i), t1, err)
			}
		}
	})
	if t3 <= t2 {
		t.Fatalf("terms %d then %d", t2, t3)
	}
	// 4. The new-version leader of t2, woken as a former leader, is fenced
	// by what the later leader of the earlier version wrote: flags t3 are
	// below its own flags t2<<16, its term t2 is below t3.
	w, err := memfence.New(memfence.Config{Servers: []string{ms[0].Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Set(ctx, key(n/2), []byte("stale"), 0, t2); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("a former leader of term %d over an item of term %d (earlier layout): %v, want ErrFenced", t2, t3, err)
	}
	if err := w.Delete(ctx, key(n/2+1), t2); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("a former leader's delete: %v, want ErrFenced", err)
	}
	if errs := w.WriteAll(ctx, nil, t2, []memfence.Write{{Key: key(n/2 + 2), Value: []byte("stale")}}); !errors.Is(errs[0], memfence.ErrFenced) {
		t.Fatalf("a former leader's pipelined write: %v, want ErrFenced", errs[0])
	}
	if it, err := mc.Get(key(n / 2)); err != nil || string(it.Value) != "old-2" || it.Flags != t3 {
		t.Fatalf("%s after the former leader's writes: %+v, %v", key(n/2), it, err)
	}

	// 5. A node of this version takes over and applies what is pending:
	// every key, whichever layout and term it holds.
	b := testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "new-b", Memcached: addrs(servers)})
	waitApplied(t, cli, ns, pending)
	t4 := leaderTermOf(t, cli, ns)
	if t4 <= t3 {
		t.Fatalf("terms %d then %d", t3, t4)
	}
	for i := range n {
		if it, err := mc.Get(key(i)); err != nil || string(it.Value) != "new-b" || it.Flags != memfence.Flags(t4) {
			t.Fatalf("%s at the end: %+v, %v; want new-b with flags %d (term %d)", key(i), it, err, memfence.Flags(t4), t4)
		}
	}
	if f := b.Stats.Fenced.Load() + a.Stats.Fenced.Load(); f != 0 {
		t.Fatalf("%d writes of this version's leaders fenced", f)
	}
}

// leaderTermOf returns the namespace's current term.
func leaderTermOf(t *testing.T, cli *clientv3.Client, ns string) uint32 {
	t.Helper()
	st, err := election.Observe(testenv.Ctx(t, 10*time.Second), cli, keyspace.MustNew(ns))
	if err != nil {
		t.Fatal(err)
	}
	return uint32(st.Term)
}
