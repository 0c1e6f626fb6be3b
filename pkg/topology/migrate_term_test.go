package topology_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// A moved key keeps its value and the term it was written under, not the
// term of the leader that moves it (guarantees.md, "What is survived"):
// the term in an item's flags says which leadership wrote its value, and a
// copy is a move, not a write.
func TestMigrateKeepsEachItemsTerm(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("terms")
	ctx := testenv.Ctx(t, 60*time.Second)
	// Two earlier terms: the leader below takes the third.
	for range 2 {
		if _, err := cli.Put(ctx, l.Term(), "earlier"); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c := testenv.StartMemcached(t), testenv.StartMemcached(t), testenv.StartMemcached(t)
	from := topo(hashring.Ketama, a.Addr, b.Addr)
	to := topo(hashring.Ketama, a.Addr, b.Addr, c.Addr)
	from.Epoch, to.Epoch = 1, 2
	lead := leadership(t, cli, l)
	if lead.Term != 3 {
		t.Fatalf("leadership of term %d, want 3", lead.Term)
	}
	rf, _ := hashring.New(from.Ring())
	rt, _ := hashring.New(to.Ring())
	wf, err := memfence.New(memfence.Config{Selector: rf})
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	terms := map[string]uint32{}
	moving := 0
	for i := range 200 {
		k := fmt.Sprintf("t-%d", i)
		terms[k] = uint32(1 + i%2)
		if err := wf.Set(ctx, k, []byte(k), 0, terms[k]); err != nil {
			t.Fatal(err)
		}
		if rf.Index(k) != rt.Index(k) {
			moving++
		}
	}
	res, err := topology.Migrate(ctx, topology.MigrateConfig{Etcd: cli, Layout: l, Lead: lead, From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != moving || res.UnmovedCount != 0 {
		t.Fatalf("result %+v, want %d moved", res, moving)
	}
	wt, err := memfence.New(memfence.Config{Selector: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	for k, term := range terms {
		it, err := wt.Get(ctx, k)
		if err != nil || string(it.Value) != k || it.Term != term {
			t.Fatalf("%s after the change: %+v, %v; want its value under term %d", k, it, err, term)
		}
	}
}
