package election_test

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// The observer follows each node's campaign: the leader leads with its
// term and a live lease deadline, the other campaigns; when the leader
// stops, it is idle with no deadline, and the other leads the next term.
func TestObserver(t *testing.T) {
	_, cli := testenv.Etcd(t)
	layout := keyspace.MustNew("t")
	type cand struct {
		obs    *election.Observer
		terms  chan uint64
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(id string) *cand {
		ctx, cancel := context.WithCancel(context.Background())
		c := &cand{obs: &election.Observer{}, terms: make(chan uint64, 4), cancel: cancel, done: make(chan struct{})}
		cfg := election.Config{Etcd: cli, Layout: layout, NodeID: id, LeaseTTL: 2 * time.Second, Logger: testenv.Logger(), Observer: c.obs}
		go func() {
			defer close(c.done)
			_ = election.Run(ctx, cfg, func(l *election.Leadership) error {
				c.terms <- l.Term
				<-l.Context().Done()
				return nil
			})
		}()
		t.Cleanup(func() { cancel(); <-c.done })
		return c
	}
	if s := (&election.Observer{}).State(); s != election.StateIdle || s.String() != "idle" {
		t.Errorf("zero Observer state = %v", s)
	}
	a := start("a")
	term := <-a.terms
	b := start("b")
	testenv.Eventually(t, 30*time.Second, func() bool { return b.obs.State() == election.StateCampaigning }, "b never campaigned")
	if !a.obs.IsLeader() || a.obs.Term() != term || a.obs.Won() != 1 || a.obs.State().String() != "leading" {
		t.Errorf("a: leader %v term %d (want %d) won %d state %v", a.obs.IsLeader(), a.obs.Term(), term, a.obs.Won(), a.obs.State())
	}
	for name, o := range map[string]*election.Observer{"a": a.obs, "b": b.obs} {
		if dl := o.LeaseDeadline(); !dl.After(time.Now()) || dl.After(time.Now().Add(2*time.Second)) {
			t.Errorf("%s lease deadline %v is not within the TTL ahead", name, dl)
		}
		if ans := o.LastAnswer(); time.Since(ans) > 2*time.Second {
			t.Errorf("%s last answer %v is older than the TTL", name, ans)
		}
	}
	if b.obs.IsLeader() || b.obs.Term() != 0 {
		t.Errorf("b: leader %v term %d", b.obs.IsLeader(), b.obs.Term())
	}

	a.cancel()
	<-a.done
	if a.obs.State() != election.StateIdle || !a.obs.LeaseDeadline().IsZero() || a.obs.Term() != term {
		t.Errorf("stopped a: state %v deadline %v term %d", a.obs.State(), a.obs.LeaseDeadline(), a.obs.Term())
	}
	next := <-b.terms
	if !b.obs.IsLeader() || b.obs.Term() != next || next <= term {
		t.Errorf("b after a stopped: leader %v term %d (won %d, a had %d)", b.obs.IsLeader(), b.obs.Term(), next, term)
	}
}
