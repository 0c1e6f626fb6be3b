package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// These tests exercise the submission receipts and lookups of
// tokenseq.Submitter that sessions rely on, and a session settling lost
// replies and pruning receipts with them.

func (e *env) register(t *testing.T, name string) *registry.Incarnation {
	t.Helper()
	inc, err := e.c.reg.Register(e.ctx, name, registry.RegisterConfig{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inc.Close(e.ctx) })
	return inc
}

func request(inc *registry.Incarnation, id string, lease bool) tokenseq.Request {
	req := tokenseq.Request{Name: inc.Name, Incarnation: inc.Incarnation, ID: id, Ops: []ops.Op{ops.Set("k", []byte(id), 0)}}
	if lease {
		req.Lease = inc.LeaseID
	}
	return req
}

// Resending a submission with the same id stores nothing and returns the
// first token, with or without a receipt.
func TestSubmitIsIdempotentPerID(t *testing.T) {
	e := newEnv(t)
	inc := e.register(t, "svc")
	for _, withReceipt := range []bool{false, true} {
		req := request(inc, map[bool]string{false: "plain", true: "receipted"}[withReceipt], withReceipt)
		first, err := e.c.sub.SubmitRequest(e.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := e.c.sub.SubmitRequest(e.ctx, req)
		if err != nil || again != first {
			t.Fatalf("resend: %v, %v; want %v", again, err, first)
		}
		resp, err := e.cli.Get(e.ctx, e.layout.Batch(inc.Name, inc.Incarnation, req.ID))
		if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Version != 1 {
			t.Fatalf("batch after resend: %v %v", resp, err)
		}
	}
}

// A receipt is written in the batch's transaction, under the incarnation's
// lease; it outlives the batch (deleted when applied) but not the lease,
// while the batch outlives the lease (G4).
func TestReceiptLivesUnderTheLease(t *testing.T) {
	e := newEnv(t)
	inc := e.register(t, "svc")
	req := request(inc, "b1", true)
	tok, err := e.c.sub.SubmitRequest(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	rk := e.layout.Receipt(inc.Name, inc.Incarnation, "b1")
	resp, err := e.cli.Get(e.ctx, rk)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("receipt: %v %v", resp, err)
	}
	kv := resp.Kvs[0]
	if string(kv.Value) != tokenseq.ReceiptAccepted || kv.ModRevision != tok.Revision || clientv3.LeaseID(kv.Lease) != inc.LeaseID {
		t.Fatalf("receipt %q rev %d lease %x; want %q rev %d lease %x", kv.Value, kv.ModRevision, kv.Lease, tokenseq.ReceiptAccepted, tok.Revision, inc.LeaseID)
	}

	// The leader deletes applied batches; the receipt still tells.
	if _, err := e.cli.Delete(e.ctx, e.layout.Batch(inc.Name, inc.Incarnation, "b1")); err != nil {
		t.Fatal(err)
	}
	if got, err := e.c.sub.Lookup(e.ctx, req); err != nil || got != tok {
		t.Fatalf("lookup after apply: %v, %v; want %v", got, err, tok)
	}
	// A resend after the batch was applied is not stored again.
	if got, err := e.c.sub.SubmitRequest(e.ctx, req); err != nil || got != tok {
		t.Fatalf("resend after apply: %v, %v; want %v", got, err, tok)
	}
	if n := e.count(t, e.layout.OpsPrefix()); n != 0 {
		t.Fatalf("resend stored a batch again: %d pending", n)
	}

	req2 := request(inc, "b2", true)
	tok2, err := e.c.sub.SubmitRequest(e.ctx, req2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Revoke(e.ctx, inc.LeaseID); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, e.layout.ReceiptsPrefix()); n != 0 {
		t.Fatalf("%d receipts outlived the lease", n)
	}
	// b2 is still pending, so the lookup still finds it; b1 is gone for good.
	if got, err := e.c.sub.Lookup(e.ctx, req2); err != nil || got != tok2 {
		t.Fatalf("lookup of pending batch after lease loss: %v, %v", got, err)
	}
	if _, err := e.c.sub.Lookup(e.ctx, req); !errors.Is(err, tokenseq.ErrOutcomeUnknown) {
		t.Fatalf("lookup of applied batch after lease loss: %v", err)
	}
	// Submitting under the revoked lease is refused as expired, not as a
	// lease error.
	if _, err := e.c.sub.SubmitRequest(e.ctx, request(inc, "b3", true)); !errors.Is(err, tokenseq.ErrExpired) {
		t.Fatalf("submit after revoke: %v", err)
	}
}

// A lookup that finds nothing while the incarnation is current settles the
// outcome: it voids the id, so a late copy is refused and the answer stays
// "not accepted".
func TestLookupVoidsAnUnsentSubmission(t *testing.T) {
	e := newEnv(t)
	inc := e.register(t, "svc")
	req := request(inc, "lost", true)
	if _, err := e.c.sub.Lookup(e.ctx, req); !errors.Is(err, tokenseq.ErrNotAccepted) {
		t.Fatalf("lookup: %v", err)
	}
	if _, err := e.c.sub.SubmitRequest(e.ctx, req); !errors.Is(err, tokenseq.ErrVoided) {
		t.Fatalf("late copy: %v", err)
	}
	if _, err := e.c.sub.Lookup(e.ctx, req); !errors.Is(err, tokenseq.ErrNotAccepted) {
		t.Fatalf("second lookup: %v", err)
	}
	if n := e.count(t, e.layout.OpsPrefix()); n != 0 {
		t.Fatalf("%d batches stored", n)
	}
}

// When the incarnation is no longer current nothing more can be accepted
// under it: while its lease lives, a missing receipt means not accepted.
func TestLookupAfterSupersededWhileLeaseLives(t *testing.T) {
	e := newEnv(t)
	old := e.register(t, "svc")
	e.register(t, "svc") // supersedes old; old's lease is still kept alive
	if _, err := e.c.sub.Lookup(e.ctx, request(old, "never", true)); !errors.Is(err, tokenseq.ErrNotAccepted) {
		t.Fatalf("lookup: %v", err)
	}
	// Without receipts, only a pending batch can be found.
	if _, err := e.c.sub.Lookup(e.ctx, request(old, "never", false)); !errors.Is(err, tokenseq.ErrOutcomeUnknown) {
		t.Fatalf("lookup without receipts: %v", err)
	}
}

var errLostReply = errors.New("test: reply lost")

// A batch whose transaction committed but whose reply was lost is found by
// the lookup and returned with its token; it is not sent again. With
// receipts this holds even after the batch was applied and deleted.
func TestSessionLostReplyIsLookedUpNotResent(t *testing.T) {
	for _, c := range []struct {
		name       string
		noReceipts bool
		applied    bool // let the batch be applied and deleted before the lookup
		found      bool
	}{
		{name: "pending", found: true},
		{name: "applied", applied: true, found: true},
		{name: "pending-no-receipts", noReceipts: true, found: true},
		{name: "applied-no-receipts", noReceipts: true, applied: true, found: false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if c.applied {
				e.startNode(t)
			}
			h := e.history(t)
			var lost atomic.Bool
			var committed Token
			s := e.session(t, "svc", SessionConfig{
				SkipDrain: true, NoReceipts: c.noReceipts,
				hooks: &sessionHooks{send: func(ctx context.Context, req tokenseq.Request, submit func() (Token, error)) (Token, error) {
					tok, err := submit()
					if err != nil || lost.Swap(true) {
						return tok, err
					}
					committed = tok
					if c.applied {
						if err := e.c.WaitApplied(ctx, tok); err != nil {
							t.Errorf("wait applied: %v", err)
						}
						if p := e.count(t, e.layout.OpsPrefix()); p != 0 {
							t.Errorf("batch still pending after being applied: %d", p)
						}
					}
					return tokenseq.Zero, errLostReply
				}},
			})
			tok, err := s.Set(e.ctx, "k", []byte("v"), 0)
			if c.found {
				if err != nil || tok != committed {
					t.Fatalf("got %v, %v; want the committed token %v", tok, err, committed)
				}
			} else {
				var u *UnknownOutcomeError
				if !errors.Is(err, ErrOutcomeUnknown) || !errors.As(err, &u) || !errors.Is(err, errLostReply) {
					t.Fatalf("got %v, %v; want an unknown outcome", tok, err)
				}
			}
			if st := s.Stats(); st.Lookups != 1 || st.Retries != 0 {
				t.Fatalf("stats %+v", st)
			}
			if u := (*UnknownOutcomeError)(nil); errors.As(err, &u) {
				if _, err := s.Resolve(e.ctx, u); !errors.Is(err, ErrOutcomeUnknown) {
					t.Fatalf("resolve: %v", err)
				}
			}
			if w := h.collect(t); len(w.batches) != 1 {
				t.Fatalf("%d batches stored, want 1", len(w.batches))
			}
		})
	}
}

// A request lost before it reached etcd is found not accepted; the lookup
// voids its id, so a late copy can never be accepted, and the batch is
// resent under a new id: stored exactly once.
func TestSessionLostRequestIsVoidedAndResent(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	var lostReq atomic.Pointer[tokenseq.Request]
	s := e.session(t, "svc", SessionConfig{
		SkipDrain: true,
		hooks: &sessionHooks{send: func(ctx context.Context, req tokenseq.Request, submit func() (Token, error)) (Token, error) {
			if lostReq.CompareAndSwap(nil, &req) {
				return tokenseq.Zero, errLostReply
			}
			return submit()
		}},
	})
	tok, err := s.Set(e.ctx, "k", []byte("v"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Lookups != 1 || st.Retries != 1 || st.Accepted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The copy that was "lost" arrives late: refused.
	if _, err := e.c.sub.SubmitRequest(e.ctx, *lostReq.Load()); !errors.Is(err, tokenseq.ErrVoided) {
		t.Fatalf("late copy: %v", err)
	}
	w := h.collect(t)
	if len(w.batches) != 1 || w.batches[0].ID == lostReq.Load().ID {
		t.Fatalf("batches %+v (lost id %s), want one under a new id", w.batches, lostReq.Load().ID)
	}
	if tok.Revision == 0 {
		t.Fatal("zero token")
	}
}

// Receipts are stored under the incarnation's lease with each batch and
// deleted once the reply has arrived.
func TestSessionPrunesReceipts(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	s := e.session(t, "svc", SessionConfig{SkipDrain: true})
	const n = 30
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Set(e.ctx, fmt.Sprintf("k%d", i), []byte("v"), 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	testenv.Eventually(t, 30*time.Second, func() bool { return e.count(t, e.layout.ReceiptsPrefix()) == 0 },
		"receipts left: %d", e.count(t, e.layout.ReceiptsPrefix()))
	w := h.collect(t)
	if len(w.receipts) != n {
		t.Fatalf("%d receipts written, want %d", len(w.receipts), n)
	}
	for _, l := range w.receipts {
		if l != int64(s.lease()) {
			t.Fatalf("receipt under lease %x, want %x", l, s.lease())
		}
	}
	if got := e.count(t, e.layout.OpsPrefix()); got != n {
		t.Fatalf("%d batches pending, want %d", got, n)
	}
}
