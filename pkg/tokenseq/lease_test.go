package tokenseq_test

import (
	"errors"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// TestWrongLeaseIsRefusedAndStoresNothing checks that a submission naming
// another registration's lease is refused with ErrLeaseMismatch (which is
// bad input), alone and in a group with a valid submission of the same
// name, and that neither the batch nor a receipt under the wrong lease is
// stored: such a receipt would outlive the incarnation's own lease, or die
// before it, and let one batch id be stored twice.
func TestWrongLeaseIsRefusedAndStoresNothing(t *testing.T) {
	f := newFixture(t)
	sec, other := f.register(t, "sec"), f.register(t, "other")
	set := []ops.Op{ops.Set("k", []byte("v"), 0)}
	wrong := tokenseq.Request{Name: "sec", Incarnation: sec.Incarnation, ID: "cross", Ops: set, Lease: other.LeaseID}
	if _, err := f.sub.SubmitRequest(f.ctx, wrong); !errors.Is(err, tokenseq.ErrLeaseMismatch) || !errors.Is(err, ops.ErrInvalid) {
		t.Fatalf("submit under another's lease: %v, want ErrLeaseMismatch and ErrInvalid", err)
	}
	if tokenseq.IsOutcomeUnknown(fmtErr(f, wrong)) {
		t.Fatal("a lease mismatch leaves the outcome open")
	}
	if _, err := f.sub.Lookup(f.ctx, wrong); !errors.Is(err, tokenseq.ErrLeaseMismatch) {
		t.Fatalf("lookup under another's lease: %v, want ErrLeaseMismatch", err)
	}

	// In a group: the valid member is accepted, the wrong one refused.
	grouped := newSubmitter(t, tokenseq.SubmitterConfig{Etcd: f.cli, Layout: f.layout, MaxGroupBatches: 8})
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() {
			req := tokenseq.Request{Name: "sec", Incarnation: sec.Incarnation, ID: "b" + string(rune('a'+i)), Ops: set, Lease: sec.LeaseID}
			if i%2 == 1 {
				req.Lease = other.LeaseID
			}
			_, errs[i] = grouped.SubmitRequest(f.ctx, req)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 && err != nil {
			t.Errorf("submission %d under the right lease: %v", i, err)
		}
		if i%2 == 1 && !errors.Is(err, tokenseq.ErrLeaseMismatch) {
			t.Errorf("submission %d under the wrong lease: %v, want ErrLeaseMismatch", i, err)
		}
	}
	if n := f.pendingBatches(t); n != 8 {
		t.Fatalf("%d batches pending, want the 8 under the right lease", n)
	}
	resp, err := f.cli.Get(f.ctx, f.layout.ReceiptsPrefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if clientv3.LeaseID(kv.Lease) != sec.LeaseID {
			t.Errorf("receipt %s under lease %x, want only the incarnation's own %x", kv.Key, kv.Lease, sec.LeaseID)
		}
	}
	if len(resp.Kvs) != 8 {
		t.Errorf("%d receipts, want 8", len(resp.Kvs))
	}
}

// fmtErr submits req again and returns its error.
func fmtErr(f *fixture, req tokenseq.Request) error {
	_, err := f.sub.SubmitRequest(f.ctx, req)
	return err
}
