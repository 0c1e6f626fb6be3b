package topology_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// A change resumed after its leader stopped half way (some keys copied to
// their new server and deleted from the old one, the clean recorded) ends
// with every key on its new server with its value, and Applied is To.
func TestMigrateResumesAHalfDoneChange(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("migrate")
	a, b, c := testenv.StartMemcached(t), testenv.StartMemcached(t), testenv.StartMemcached(t)
	from := topo(hashring.Ketama, a.Addr, b.Addr)
	to := topo(hashring.Ketama, a.Addr, b.Addr, c.Addr)
	from.Epoch, to.Epoch = 1, 2
	lead := leadership(t, cli, l)
	term := uint32(lead.Term)
	rf, _ := hashring.New(from.Ring())
	rt, _ := hashring.New(to.Ring())
	wf, err := memfence.New(memfence.Config{Selector: rf})
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	wt, err := memfence.New(memfence.Config{Selector: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	ctx := testenv.Ctx(t, 60*time.Second)
	keys := map[string]string{}
	moved := 0
	for i := range 400 {
		k, v := fmt.Sprintf("m-%d", i), fmt.Sprintf("v-%d", i)
		keys[k] = v
		if err := wf.Set(ctx, k, []byte(v), 0, term); err != nil {
			t.Fatal(err)
		}
		// The stopped leader moved every other key that moves.
		if rf.Index(k) != rt.Index(k) {
			moved++
			if moved%2 == 0 {
				if err := wt.Set(ctx, k, []byte(v), 0, term); err != nil {
					t.Fatal(err)
				}
				if err := wf.Delete(ctx, k, term); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if moved < 50 {
		t.Fatalf("only %d keys move", moved)
	}
	res, err := topology.Migrate(ctx, topology.MigrateConfig{Etcd: cli, Layout: l, Lead: lead, From: from, To: to, Cleaned: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != moved-moved/2 {
		t.Errorf("moved %d, want the %d not moved yet", res.Moved, moved-moved/2)
	}
	reader := memcache.NewFromSelector(rt)
	defer reader.Close()
	for k, v := range keys {
		it, err := reader.Get(k)
		if err != nil || string(it.Value) != v || it.Flags != memfence.Flags(term) {
			t.Fatalf("%s after the change: %+v, %v; want %q", k, it, err, v)
		}
	}
	for _, s := range []*testenv.Memcached{a, b, c} {
		w, _ := memfence.New(memfence.Config{Servers: []string{s.Addr}})
		ks, err := w.Keys(ctx)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if owner := rt.Servers()[rt.Index(k.Key)].Addr; owner != s.Addr {
				t.Fatalf("%s still holds %q, placed on %s", s.Addr, k.Key, owner)
			}
		}
	}
	app, found, err := topology.ReadApplied(ctx, cli, l)
	if err != nil || !found || app.To != nil || app.Applied.Epoch != 2 || app.Applied.Diff(to) != "" {
		t.Fatalf("applied after the change: %+v, %v, %v", app, found, err)
	}
	// Bad configs write nothing.
	if _, err := topology.Migrate(ctx, topology.MigrateConfig{Etcd: cli, Layout: l, From: from, To: to}); err == nil {
		t.Fatal("Migrate without a leadership")
	}
}

// leadership wins an election on l and returns the leadership, held until
// the test ends.
func leadership(t *testing.T, cli *clientv3.Client, l keyspace.Layout) *election.Leadership {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *election.Leadership, 1)
	done := make(chan error, 1)
	go func() {
		done <- election.Run(ctx, election.Config{Etcd: cli, Layout: l, NodeID: "m"}, func(le *election.Leadership) error {
			got <- le
			<-le.Context().Done()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("election: %v", err)
		}
	})
	select {
	case le := <-got:
		return le
	case <-time.After(30 * time.Second):
		t.Fatal("no leadership within 30s")
		return nil
	}
}

// With Records, the keys to move come from restore's record: servers that
// cannot list their keys at all (LRU crawler off) still have every key
// moved, and each ends on its new server only.
func TestMigrateTakesTheKeysFromTheRecord(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("records")
	var servers []*testenv.Memcached
	for range 3 {
		servers = append(servers, testenv.StartMemcached(t, "-o", "no_lru_crawler"))
	}
	from := topo(hashring.Ketama, servers[0].Addr, servers[1].Addr)
	to := topo(hashring.Ketama, servers[0].Addr, servers[1].Addr, servers[2].Addr)
	from.Epoch, to.Epoch = 1, 2
	lead := leadership(t, cli, l)
	term := uint32(lead.Term)
	rf, _ := hashring.New(from.Ring())
	rt, _ := hashring.New(to.Ring())
	wf, err := memfence.New(memfence.Config{Selector: rf})
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	ctx := testenv.Ctx(t, 60*time.Second)
	keys := map[string]string{}
	moving := 0
	for i := range 300 {
		k, v := fmt.Sprintf("r-%d", i), fmt.Sprintf("v-%d", i)
		keys[k] = v
		if err := wf.Set(ctx, k, []byte(v), 0, term); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, l.MemcachedValue(k), `{"value":"","term":1,"token":"1.0"}`); err != nil {
			t.Fatal(err)
		}
		if rf.Index(k) != rt.Index(k) {
			moving++
		}
	}
	if _, err := topology.Migrate(ctx, topology.MigrateConfig{Etcd: cli, Layout: l, Lead: lead, From: from, To: to}); err == nil {
		t.Fatal("a change without Records over servers that cannot list their keys succeeded")
	}
	stats := &memfence.Stats{}
	res, err := topology.Migrate(ctx, topology.MigrateConfig{Etcd: cli, Layout: l, Lead: lead, From: from, To: to, Records: true, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recorded != len(keys) || res.Moved != moving || res.UnmovedCount != 0 || stats.MovedKeys.Load() != uint64(moving) {
		t.Fatalf("result %+v (stats moved %d), want %d recorded and %d moved", res, stats.MovedKeys.Load(), len(keys), moving)
	}
	assertOnlyOnOwner(t, ctx, keys, rt, servers, term)
	app, _, err := topology.ReadApplied(ctx, cli, l)
	if err != nil || app.LastChange == nil || app.LastChange.Moved != moving || app.LastChange.ToEpoch != 2 || app.LastChange.Term != lead.Term {
		t.Fatalf("change record: %+v, %v", app.LastChange, err)
	}
}

// A key whose copy the new server refuses (over its item size) stays on
// its old server and is reported: in the result, the stats and the change
// record. The other keys move.
func TestMigrateReportsTheKeysItCannotMove(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("unmoved")
	a, b := testenv.StartMemcached(t, "-I", "2m"), testenv.StartMemcached(t, "-I", "2m")
	c := testenv.StartMemcached(t) // -I 1m
	from := topo(hashring.Ketama, a.Addr, b.Addr)
	to := topo(hashring.Ketama, a.Addr, b.Addr, c.Addr)
	from.Epoch, to.Epoch = 1, 2
	lead := leadership(t, cli, l)
	term := uint32(lead.Term)
	rf, _ := hashring.New(from.Ring())
	rt, _ := hashring.New(to.Ring())
	wf, err := memfence.New(memfence.Config{Selector: rf})
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	ctx := testenv.Ctx(t, 60*time.Second)
	keys := map[string]string{}
	big := ""
	for i := range 200 {
		k, v := fmt.Sprintf("u-%d", i), fmt.Sprintf("v-%d", i)
		if big == "" && rt.Servers()[rt.Index(k)].Addr == c.Addr {
			big, v = k, string(make([]byte, 1500_000))
		} else {
			keys[k] = v
		}
		if err := wf.Set(ctx, k, []byte(v), 0, term); err != nil {
			t.Fatal(err)
		}
	}
	stats := &memfence.Stats{}
	res, err := topology.Migrate(ctx, topology.MigrateConfig{Etcd: cli, Layout: l, Lead: lead, From: from, To: to, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	if res.UnmovedCount != 1 || len(res.Unmoved) != 1 || res.Unmoved[0].Key != big || res.Unmoved[0].To != c.Addr ||
		!strings.Contains(res.Unmoved[0].Reason, "memcached refused") || stats.UnmovedKeys.Load() != 1 {
		t.Fatalf("result %+v, stats unmoved %d; want %q reported as refused by %s", res, stats.UnmovedKeys.Load(), big, c.Addr)
	}
	if it, err := wf.Get(ctx, big); err != nil || len(it.Value) != 1500_000 {
		t.Fatalf("%s is not left on its old server: %v", big, err)
	}
	app, _, err := topology.ReadApplied(ctx, cli, l)
	if err != nil || app.To != nil || app.LastChange == nil || app.LastChange.UnmovedCount != 1 || app.LastChange.Unmoved[0].Key != big {
		t.Fatalf("change record: %+v, %v", app, err)
	}
	assertOnlyOnOwner(t, ctx, keys, rt, []*testenv.Memcached{a, b, c}, term)
}

// assertOnlyOnOwner checks that each of keys is on the server ring names,
// with its value and term, and on no other server.
func assertOnlyOnOwner(t *testing.T, ctx context.Context, keys map[string]string, ring *hashring.Ring, servers []*testenv.Memcached, term uint32) {
	t.Helper()
	for _, s := range servers {
		w, err := memfence.New(memfence.Config{Servers: []string{s.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range keys {
			it, err := w.Get(ctx, k)
			owner := ring.Servers()[ring.Index(k)].Addr
			switch {
			case owner == s.Addr && (err != nil || string(it.Value) != v || it.Term != term):
				t.Fatalf("%s on its server %s: %+v, %v; want %q of term %d", k, s.Addr, it, err, v, term)
			case owner != s.Addr && !errors.Is(err, memcache.ErrCacheMiss):
				t.Fatalf("%s is on %s too (%v), placed on %s", k, s.Addr, err, owner)
			}
		}
		w.Close()
	}
}
