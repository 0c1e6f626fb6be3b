package pool_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// strandKeys is how many keys each repetition writes.
const strandKeys = 200

// TestPoolChangeAfterRestoreStrandsNoKey: three servers, ketama, restore
// on; one server is restarted and its keys restored, then a fourth server
// is added. The keys to move come from restore's record, not from the
// servers' listings (which may leave out the items just restored), so
// every repetition ends with every key on the server the new ring names,
// with its value, and on no other server; the change record says nothing
// was left behind. Twenty repetitions, each with its own servers and
// namespace.
func TestPoolChangeAfterRestoreStrandsNoKey(t *testing.T) {
	_, cli := testenv.Etcd(t)
	var moved []int
	for rep := range 20 {
		t.Run(fmt.Sprintf("rep-%02d", rep), func(t *testing.T) {
			moved = append(moved, restartThenAdd(t, cli, fmt.Sprintf("strand-%02d", rep), true))
		})
		if t.Failed() {
			break
		}
	}
	t.Logf("%d repetitions, keys moved by each change: %v", len(moved), moved)
}

// TestPoolChangeWithoutRestoreListsUntilCountsAgree: the same without
// restore: the restarted server's keys are gone, and the change takes the
// keys from the servers' listings, each listed until it agrees with the
// server's item count. Every key left ends on the server the new ring
// names only.
func TestPoolChangeWithoutRestoreListsUntilCountsAgree(t *testing.T) {
	_, cli := testenv.Etcd(t)
	var moved []int
	for rep := range 5 {
		t.Run(fmt.Sprintf("rep-%02d", rep), func(t *testing.T) {
			moved = append(moved, restartThenAdd(t, cli, fmt.Sprintf("listed-%02d", rep), false))
		})
		if t.Failed() {
			break
		}
	}
	t.Logf("%d repetitions, keys moved by each change: %v", len(moved), moved)
}

// restartThenAdd runs one repetition in namespace ns and returns the keys
// the change moved.
func restartThenAdd(t *testing.T, cli *clientv3.Client, ns string, restore bool) int {
	ms, servers := startPool(t, 4)
	before, after := servers[:3], servers
	l := keyspace.MustNew(ns)
	stats := &memfence.Stats{}
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: l, NodeID: "a", Memcached: addrs(before), Distribution: hashring.Ketama,
		MemcachedStats: stats, RestartCheckInterval: 20 * time.Millisecond, RestoreOnRestart: restore,
	})
	keys := map[string]string{}
	for i := range strandKeys {
		keys[fmt.Sprintf("%s-%d", ns, i)] = fmt.Sprintf("value-%d", i)
	}
	waitApplied(t, cli, ns, submitKeys(t, cli, ns, keys))
	testenv.Eventually(t, 30*time.Second, func() bool { return stats.RestartChecks.Load() >= 2 }, "the leader does not check its servers")
	oldRing, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: before})
	if err != nil {
		t.Fatal(err)
	}
	restarted := ms[1]
	restarted.Stop()
	restarted.Start()
	in, err := inspect.New(cli, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 120*time.Second)
	testenv.Eventually(t, 30*time.Second, func() bool {
		st, err := in.Status(ctx)
		return err == nil && st.MemcachedRestarts == 1
	}, "the restart of %s is not recorded", restarted.Addr)
	left := keys
	if restore {
		mc := memcache.NewFromSelector(oldRing)
		defer mc.Close()
		testenv.Eventually(t, 30*time.Second, func() bool {
			for k, v := range keys {
				if it, err := mc.Get(k); err != nil || string(it.Value) != v {
					return false
				}
			}
			return true
		}, "the keys of %s are not restored", restarted.Addr)
	} else {
		left = map[string]string{}
		for k, v := range keys {
			if oldRing.Servers()[oldRing.Index(k)].Addr != restarted.Addr {
				left[k] = v
			}
		}
	}
	next, err := topology.Set(ctx, cli, l, topology.Topology{Distribution: hashring.Ketama, Servers: after})
	if err != nil {
		t.Fatal(err)
	}
	var app topology.Applied
	testenv.Eventually(t, 60*time.Second, func() bool {
		a, found, err := topology.ReadApplied(ctx, cli, l)
		app = a
		return err == nil && found && a.To == nil && a.Applied.Epoch == next.Epoch
	}, "the leader did not apply topology epoch %d", next.Epoch)
	newRing, err := hashring.New(next.Ring())
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for k := range left {
		if oldRing.Index(k) != newRing.Index(k) {
			want++
		}
	}
	lc := app.LastChange
	switch {
	case lc == nil:
		t.Fatal("the change left no record")
	case lc.UnmovedCount != 0 || len(lc.ListingShort) != 0 || lc.Moved != want:
		t.Fatalf("change record %+v: want %d moved, none unmoved, every listing agreed", lc, want)
	case restore && lc.Recorded != strandKeys:
		t.Fatalf("change record %+v: want the %d keys of the record", lc, strandKeys)
	}
	if n := stats.UnmovedKeys.Load(); n != 0 {
		t.Fatalf("%d keys counted unmoved", n)
	}
	// Every key on the server the new ring names, with its value, and on
	// no other.
	for _, s := range after {
		w, err := memfence.New(memfence.Config{Servers: []string{s.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys {
			it, err := w.Get(ctx, k)
			owner := newRing.Servers()[newRing.Index(k)].Addr
			v, kept := left[k]
			switch {
			case owner == s.Addr && kept && (err != nil || string(it.Value) != v):
				t.Errorf("%s on its server %s: %q, %v; want %q", k, s.Addr, it.Value, err, v)
			case (owner != s.Addr || !kept) && !errors.Is(err, memcache.ErrCacheMiss):
				t.Errorf("%s is on %s (%q, %v), the new ring places it on %s", k, s.Addr, it.Value, err, owner)
			}
		}
		w.Close()
	}
	return lc.Moved
}
