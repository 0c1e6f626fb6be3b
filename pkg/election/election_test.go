package election_test

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// candidate runs election.Run and reports each leadership on a channel; the
// leadership lasts until the test releases it or it is lost.
type candidate struct {
	id      string
	cancel  context.CancelFunc
	done    chan struct{}
	leading chan *election.Leadership
}

func campaign(t *testing.T, cli *clientv3.Client, layout keyspace.Layout, id string) *candidate {
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{id: id, cancel: cancel, done: make(chan struct{}), leading: make(chan *election.Leadership, 16)}
	cfg := election.Config{Etcd: cli, Layout: layout, NodeID: id, LeaseTTL: 2 * time.Second, Logger: testenv.Logger()}
	go func() {
		defer close(c.done)
		_ = election.Run(ctx, cfg, func(l *election.Leadership) error {
			c.leading <- l
			<-l.Context().Done()
			return nil
		})
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

func waitLead(t *testing.T, c *candidate) *election.Leadership {
	t.Helper()
	select {
	case l := <-c.leading:
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("%s never became leader", c.id)
		return nil
	}
}

func TestConfigValidate(t *testing.T) {
	_, cli := testenv.Etcd(t)
	layout := keyspace.MustNew("t")
	for _, cfg := range []election.Config{
		{Layout: layout, NodeID: "a"},
		{Etcd: cli, NodeID: "a"},
		{Etcd: cli, Layout: layout, NodeID: "a/b"},
		{Etcd: cli, Layout: layout, NodeID: "a", LeaseTTL: time.Second},
	} {
		if err := election.Run(context.Background(), cfg, nil); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

// One leader at a time; a graceful stop hands over at once (the leader key
// is deleted and the lease revoked, not left to expire); the term grows with
// every new leader.
func TestGracefulStopHandsOverAndTermGrows(t *testing.T) {
	_, cli := testenv.Etcd(t)
	layout := keyspace.MustNew("t")
	ctx := testenv.Ctx(t, 60*time.Second)
	a := campaign(t, cli, layout, "a")
	la := waitLead(t, a)
	b := campaign(t, cli, layout, "b")
	st, err := election.Observe(ctx, cli, layout)
	if err != nil || st.Leader != "a" || st.Term != la.Term || st.TermHolder != "a" {
		t.Fatalf("observe = %+v, %v", st, err)
	}
	select {
	case <-b.leading:
		t.Fatal("b leads while a does")
	default:
	}
	leaseA, err := cli.Get(ctx, la.Key)
	if err != nil || len(leaseA.Kvs) != 1 {
		t.Fatal("leader key missing")
	}
	a.stop()
	// a's lease is revoked as it stops, not left to expire.
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(leaseA.Kvs[0].Lease))
	if err != nil || ttl.TTL != -1 {
		t.Fatalf("a's lease after stop: TTL %d, %v (want revoked)", ttl.TTL, err)
	}
	lb := waitLead(t, b)
	if lb.Term <= la.Term {
		t.Fatalf("term %d after %d", lb.Term, la.Term)
	}
	if !lb.Valid() {
		t.Fatal("new leadership not valid")
	}
	if la.Valid() || la.Context().Err() == nil {
		t.Fatal("old leadership still valid after stop")
	}
}

// A leader whose lease is revoked from outside (as when etcd expires it)
// loses leadership at once, campaigns again and comes back with a new term.
func TestLeaseLossEndsLeadership(t *testing.T) {
	_, cli := testenv.Etcd(t)
	layout := keyspace.MustNew("t")
	ctx := testenv.Ctx(t, 60*time.Second)
	a := campaign(t, cli, layout, "a")
	l1 := waitLead(t, a)
	resp, err := cli.Get(ctx, l1.Key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal("leader key missing")
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l1.Context().Done():
	case <-ctx.Done():
		t.Fatal("leadership not cancelled after its lease was revoked")
	}
	if l1.Valid() {
		t.Fatal("Valid after loss")
	}
	// The guard fails after the loss.
	tr, err := cli.Txn(ctx).If(l1.Guard()).Commit()
	if err != nil || tr.Succeeded {
		t.Fatalf("guard after loss: %v %v", tr, err)
	}
	l2 := waitLead(t, a)
	if l2.Term <= l1.Term {
		t.Fatalf("term %d after %d", l2.Term, l1.Term)
	}
}

// Terms are unique across many leaders campaigning at once.
func TestTermsAreUniqueAcrossLeaders(t *testing.T) {
	_, cli := testenv.Etcd(t)
	layout := keyspace.MustNew("t")
	var mu sync.Mutex
	seen := map[uint64]string{}
	var cands []*candidate
	for _, id := range []string{"a", "b", "c"} {
		cands = append(cands, campaign(t, cli, layout, id))
	}
	for range 3 {
		// Whoever leads reports; stop it so the next one takes over.
		var l *election.Leadership
		var who *candidate
		deadline := time.Now().Add(30 * time.Second)
		for l == nil {
			if time.Now().After(deadline) {
				t.Fatal("no candidate became leader")
			}
			for _, c := range cands {
				select {
				case l = <-c.leading:
					who = c
				default:
				}
				if l != nil {
					break
				}
			}
			if l == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		mu.Lock()
		if prev, dup := seen[l.Term]; dup {
			t.Fatalf("term %d taken by %s and %s", l.Term, prev, who.id)
		}
		seen[l.Term] = who.id
		mu.Unlock()
		who.stop()
	}
}
