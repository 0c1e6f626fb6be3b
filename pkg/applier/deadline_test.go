package applier_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// stallingLease passes every lease call through, but holds the first
// KeepAliveOnce made once armed, whatever its context says, until release
// is closed. KeepAliveOnce is the renewal that moves a leader's local
// deadline; the session's own keep-alive stream (KeepAlive) still renews
// the lease in etcd, so the leader key stays and only the local deadline
// runs out.
type stallingLease struct {
	clientv3.Lease
	armed   atomic.Bool
	stalled chan struct{} // closed when the held renewal begins
	release chan struct{}
}

func (l *stallingLease) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if l.armed.CompareAndSwap(true, false) {
		close(l.stalled)
		<-l.release
	}
	return l.Lease.KeepAliveOnce(ctx, id)
}

// The leader checks its local lease deadline before every step of writes,
// not only before a round (G5): that check bounds the delete window (see
// guarantees.md) to one step. Its leadership context is cancelled at the
// deadline too, by the goroutine that renews the lease; that goroutine is
// late when its renewal hangs or it is not scheduled in time, and then only
// the check stops the writes.
//
// Here the leader is paused after the first step of a round of three (one
// name, three keys: a step each) while its renewal is held, until its
// deadline has passed with its context still live. It must write neither
// of the round's other keys under that term; the next term writes them.
func TestLeaderChecksItsDeadlineBeforeEveryStep(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	cli := testenv.Client(t, e.cli.Endpoints())
	lease := &stallingLease{Lease: cli.Lease, stalled: make(chan struct{}), release: make(chan struct{})}
	cli.Lease = lease
	obs := &election.Observer{}
	var (
		armed     atomic.Bool
		leadCtx   context.Context // the context the paused step was written under
		paused    = make(chan struct{})
		resume    = make(chan struct{})
		mu        sync.Mutex
		lateTerm  uint32
		lateWrite []applier.Write // writes of the paused term after the pause
	)
	hooks := applier.Hooks{
		BeforeWrite: func(ctx context.Context, w applier.Write) {
			if armed.Load() && w.Op.Key == "a" {
				mu.Lock()
				leadCtx = ctx
				mu.Unlock()
			}
		},
		AfterWrite: func(w applier.Write) {
			mu.Lock()
			if lateTerm != 0 && w.Term == lateTerm {
				lateWrite = append(lateWrite, w)
			}
			mu.Unlock()
			if armed.Load() && w.Op.Key == "a" {
				armed.Store(false)
				mu.Lock()
				lateTerm = w.Term
				mu.Unlock()
				close(paused)
				<-resume
			}
		},
	}
	nd := testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: e.layout, NodeID: "n1", Memcached: []string{e.mc.Addr},
		WriteConcurrency: 1, Election: obs, Hooks: hooks,
	})
	// Run before the node is stopped: a renewal still held keeps its
	// leadership from ending.
	letGo := sync.OnceFunc(func() { close(lease.release) })
	t.Cleanup(letGo)
	goOn := sync.OnceFunc(func() { close(resume) })
	t.Cleanup(goOn)
	caller := e.register(t, "svc")
	tok, err := caller.Set(e.ctx, "warm", []byte("up"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}

	armed.Store(true)
	tok, err = caller.Submit(e.ctx, ops.Set("a", []byte("1"), 0), ops.Set("b", []byte("2"), 0), ops.Set("c", []byte("3"), 0))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-paused:
	case <-e.ctx.Done():
		t.Fatal("the leader never wrote a")
	}
	lease.armed.Store(true)
	select {
	case <-lease.stalled:
	case <-e.ctx.Done():
		t.Fatal("the leader never renewed its lease")
	}
	// The renewal is held: the deadline of the last one stands.
	deadline := obs.LeaseDeadline()
	past := time.NewTimer(time.Until(deadline) + 10*time.Millisecond)
	select {
	case <-past.C:
	case <-e.ctx.Done():
		t.Fatal("the test ended before the leader's deadline")
	}
	mu.Lock()
	live := leadCtx != nil && leadCtx.Err() == nil
	mu.Unlock()
	if !live {
		t.Fatal("the leadership ended at its deadline: nothing is left for the check before each step to stop")
	}
	goOn()
	// The paused term's applier stops at its next step (ErrNotLeader), or
	// writes on. Its leadership ends once the renewal is let go, and the
	// next term writes the rest of the round.
	testenv.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !nd.Stats.Running.Load() || len(lateWrite) > 0
	}, "the applier of term %d stopped or wrote on", lateTerm)
	letGo()
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, w := range lateWrite {
		t.Errorf("term %d wrote %q after its lease deadline had passed", w.Term, w.Op.Key)
	}
	for k, want := range map[string]string{"a": "1", "b": "2", "c": "3"} {
		if v, _ := e.value(t, k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
}
