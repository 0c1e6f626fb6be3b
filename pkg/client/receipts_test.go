package client

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// These tests exercise the submission receipts and lookups of
// tokenseq.Submitter that sessions rely on.

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
