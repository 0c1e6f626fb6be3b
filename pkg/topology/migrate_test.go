package topology_test

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
		if err != nil || string(it.Value) != v || it.Flags != term {
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
