package tokenseq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// Errors a submission can be refused with (G1). Both are final for the
// incarnation that got them.
var (
	// ErrSuperseded means a newer incarnation of the name is registered.
	ErrSuperseded = errors.New("tokenseq: incarnation superseded by a newer registration")
	// ErrExpired means the incarnation's lease expired or was revoked and no
	// newer incarnation exists.
	ErrExpired = errors.New("tokenseq: incarnation expired")
)

// RefusedError is the error of a refused submission; it wraps ErrSuperseded
// or ErrExpired.
type RefusedError struct {
	Name        string
	Incarnation int64
	// Current is the incarnation registered now, zero when none is.
	Current int64
	cause   error
}

func (e *RefusedError) Error() string {
	if e.Current != 0 {
		return fmt.Sprintf("%v: %q incarnation %d, current incarnation %d", e.cause, e.Name, e.Incarnation, e.Current)
	}
	return fmt.Sprintf("%v: %q incarnation %d", e.cause, e.Name, e.Incarnation)
}

// Unwrap returns ErrSuperseded or ErrExpired.
func (e *RefusedError) Unwrap() error { return e.cause }

// Submitter stores batches for callers.
type Submitter struct {
	cli    *clientv3.Client
	layout keyspace.Layout
	limits ops.Limits
}

// NewSubmitter returns a Submitter for the namespace of layout.
func NewSubmitter(cli *clientv3.Client, layout keyspace.Layout, limits ops.Limits) *Submitter {
	return &Submitter{cli: cli, layout: layout, limits: limits}
}

// Limits returns the validation limits the submitter enforces.
func (s *Submitter) Limits() ops.Limits { return s.limits }

// NewBatchID returns a random submission identifier.
func NewBatchID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Submit validates batch and stores it in one transaction that checks that
// incarnation inc of name is the current registration. It returns the
// batch's token. Invalid input is refused before anything is sent. An error
// that is neither a validation error nor a *RefusedError leaves the outcome
// unknown (the transaction may have committed); use Lookup with the same id
// to find out.
//
// Submit is SubmitRequest without a receipt. It is idempotent per
// (incarnation, id) while the batch is pending: submitting an id whose batch
// is still stored returns that batch's token and stores nothing. Once the
// batch has been applied and deleted, only a receipt (SubmitRequest with a
// Lease) remembers it.
func (s *Submitter) Submit(ctx context.Context, name string, inc int64, id string, batch []ops.Op) (Token, error) {
	return s.SubmitRequest(ctx, Request{Name: name, Incarnation: inc, ID: id, Ops: batch})
}

// Receipt values stored under keyspace.Layout.Receipt.
const (
	// ReceiptAccepted marks a receipt written with its batch.
	ReceiptAccepted = "accepted"
	// ReceiptVoided marks a receipt written by Lookup to fence off a
	// submission that had not been accepted.
	ReceiptVoided = "voided"
)

// Errors about submissions whose outcome was unknown.
var (
	// ErrVoided is returned by Submit for a batch id that Lookup has already
	// declared not accepted: that submission can never be accepted.
	ErrVoided = errors.New("tokenseq: batch id was voided by a lookup")
	// ErrNotAccepted is returned by Lookup when the submission was not
	// accepted and can no longer be.
	ErrNotAccepted = errors.New("tokenseq: submission was not accepted")
	// ErrOutcomeUnknown is returned by Lookup when nothing left in etcd can
	// tell whether the submission was accepted.
	ErrOutcomeUnknown = errors.New("tokenseq: outcome of submission unknown")
)

// Request is one submission.
type Request struct {
	// Name is the registration name.
	Name string
	// Incarnation is the incarnation token the batch is submitted under.
	Incarnation int64
	// ID identifies the submission within the incarnation; empty means a
	// random id (which makes Lookup impossible).
	ID string
	// Ops is the batch.
	Ops []ops.Op
	// Lease, when non-zero, must be the incarnation's lease: a receipt is
	// then stored under it in the same transaction as the batch, so that
	// Lookup can tell after the batch has been applied and deleted. The
	// receipt is one small key (its key is about as long as the batch key,
	// its value 8 bytes) that lives until it is deleted with
	// DeleteReceipts or the lease ends.
	Lease clientv3.LeaseID
}

// SubmitRequest validates req.Ops and stores them in one transaction that
// checks that the incarnation is the current registration (G1), that no
// batch with the same id is stored and, with a Lease, that no receipt with
// the same id exists. It returns the batch's token.
//
// It is idempotent per (incarnation, id): when the batch or its accepted
// receipt already exists, nothing is written and the token of the earlier
// acceptance is returned, so resending after a lost reply cannot store a
// batch twice. An id voided by Lookup is refused with ErrVoided.
//
// Invalid input is refused before anything is sent. A refused batch returns
// a *RefusedError. Any other error leaves the outcome unknown: the
// transaction may have committed. Use Lookup with the same request.
func (s *Submitter) SubmitRequest(ctx context.Context, req Request) (Token, error) {
	if err := keyspace.ValidateName(req.Name); err != nil {
		return Zero, err
	}
	if err := ops.ValidateBatch(req.Ops, s.limits); err != nil {
		return Zero, err
	}
	if req.ID == "" {
		req.ID = NewBatchID()
	}
	if err := keyspace.ValidateName(req.ID); err != nil {
		return Zero, fmt.Errorf("batch id: %w", err)
	}
	name, inc, id := req.Name, req.Incarnation, req.ID
	rec := (&ops.Batch{Name: name, Incarnation: inc, ID: id, Ops: req.Ops}).Encode()
	regKey := s.layout.Reg(name)
	batchKey := s.layout.Batch(name, inc, id)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(regKey), "=", inc),
		clientv3.Compare(clientv3.CreateRevision(batchKey), "=", 0),
	}
	then := []clientv3.Op{clientv3.OpPut(batchKey, string(rec))}
	els := []clientv3.Op{clientv3.OpGet(regKey), clientv3.OpGet(batchKey)}
	if req.Lease != 0 {
		rk := s.layout.Receipt(name, inc, id)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(rk), "=", 0))
		then = append(then, clientv3.OpPut(rk, ReceiptAccepted, clientv3.WithLease(req.Lease)))
		els = append(els, clientv3.OpGet(rk))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// Rejected before anything was stored: the lease is gone.
			return Zero, &RefusedError{Name: name, Incarnation: inc, cause: ErrExpired}
		}
		return Zero, fmt.Errorf("tokenseq: submit: %w", err)
	}
	if resp.Succeeded {
		return Token{Revision: resp.Header.Revision}, nil
	}
	f := readFindings(resp.Responses)
	switch {
	case f.batch != 0:
		return Token{Revision: f.batch}, nil
	case f.receipt == ReceiptAccepted:
		return Token{Revision: f.receiptRev}, nil
	case f.receipt != "":
		return Zero, fmt.Errorf("%w: %q incarnation %d batch %s", ErrVoided, name, inc, id)
	}
	return Zero, s.refusal(ctx, name, inc, resp.Header.Revision, resp.Responses[0].GetResponseRange())
}

// findings is what the Else branch of a submission or lookup read.
type findings struct {
	reg        int64  // ModRevision of the registration, 0 when none
	batch      int64  // ModRevision of the batch, 0 when none
	receipt    string // receipt value, "" when none
	receiptRev int64  // ModRevision of the receipt
}

func readFindings(rs []*etcdserverpb.ResponseOp) findings {
	var f findings
	first := func(i int) *mvccpb.KeyValue {
		if i >= len(rs) {
			return nil
		}
		if rr := rs[i].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
			return rr.Kvs[0]
		}
		return nil
	}
	if kv := first(0); kv != nil {
		f.reg = kv.ModRevision
	}
	if kv := first(1); kv != nil {
		f.batch = kv.ModRevision
	}
	if kv := first(2); kv != nil {
		f.receipt, f.receiptRev = string(kv.Value), kv.ModRevision
	}
	return f
}

// Lookup finds out whether the submission req (Name, Incarnation, ID and
// Lease; Ops are ignored) was accepted, after SubmitRequest returned an error
// that left the outcome unknown. It returns the batch's token when it was
// accepted, an error wrapping ErrNotAccepted when it was not and never will
// be, an error wrapping ErrOutcomeUnknown when etcd no longer holds anything
// that could tell, and any other error when etcd could not be asked (try
// again).
//
// With a Lease (receipts on), Lookup settles the outcome: when the
// incarnation is current and neither the batch nor its receipt exists, it
// writes a voided receipt in the same transaction, so a copy of the
// submission still in flight is refused with ErrVoided and "not accepted"
// stays true. When the incarnation is no longer current nothing can be
// accepted under it any more; the answer is then certain as long as the
// lease lives (so its receipts do), and ErrOutcomeUnknown once the lease is
// gone and the batch has been applied.
//
// Without a Lease only a pending batch can be found: anything else is
// ErrOutcomeUnknown, since an applied batch leaves no trace.
func (s *Submitter) Lookup(ctx context.Context, req Request) (Token, error) {
	if err := keyspace.ValidateName(req.Name); err != nil {
		return Zero, err
	}
	if err := keyspace.ValidateName(req.ID); err != nil {
		return Zero, fmt.Errorf("batch id: %w", err)
	}
	name, inc, id := req.Name, req.Incarnation, req.ID
	regKey := s.layout.Reg(name)
	batchKey := s.layout.Batch(name, inc, id)
	desc := fmt.Sprintf("%q incarnation %d batch %s", name, inc, id)
	if req.Lease == 0 {
		resp, err := s.cli.Get(ctx, batchKey)
		if err != nil {
			return Zero, fmt.Errorf("tokenseq: lookup: %w", err)
		}
		if len(resp.Kvs) > 0 {
			return Token{Revision: resp.Kvs[0].ModRevision}, nil
		}
		return Zero, fmt.Errorf("%w: %s: no batch pending and no receipt kept", ErrOutcomeUnknown, desc)
	}
	rk := s.layout.Receipt(name, inc, id)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(regKey), "=", inc),
			clientv3.Compare(clientv3.CreateRevision(batchKey), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(rk), "=", 0)).
		Then(clientv3.OpPut(rk, ReceiptVoided, clientv3.WithLease(req.Lease))).
		Else(clientv3.OpGet(regKey), clientv3.OpGet(batchKey), clientv3.OpGet(rk)).
		Commit()
	if err != nil {
		return Zero, fmt.Errorf("tokenseq: lookup: %w", err)
	}
	if resp.Succeeded {
		return Zero, fmt.Errorf("%w: %s (voided)", ErrNotAccepted, desc)
	}
	f := readFindings(resp.Responses)
	switch {
	case f.batch != 0:
		return Token{Revision: f.batch}, nil
	case f.receipt == ReceiptAccepted:
		return Token{Revision: f.receiptRev}, nil
	case f.receipt != "":
		return Zero, fmt.Errorf("%w: %s (voided)", ErrNotAccepted, desc)
	}
	// The incarnation is not current, so nothing more can be accepted under
	// it. If its lease is still alive now, it was alive when the receipt was
	// read, and an accepted submission would have left one.
	ttl, err := s.cli.TimeToLive(ctx, req.Lease)
	if err != nil {
		return Zero, fmt.Errorf("tokenseq: lookup: lease: %w", err)
	}
	if ttl.TTL > 0 {
		return Zero, fmt.Errorf("%w: %s (incarnation no longer current)", ErrNotAccepted, desc)
	}
	return Zero, fmt.Errorf("%w: %s: incarnation and its receipts are gone", ErrOutcomeUnknown, desc)
}

// DeleteReceipts deletes the receipts of the given ids of incarnation inc of
// name, in transactions of at most 100 deletions. Delete a receipt only once
// the submission's outcome is known to its sender; Lookup cannot tell an
// applied batch from a refused one without it.
func (s *Submitter) DeleteReceipts(ctx context.Context, name string, inc int64, ids []string) error {
	const perTxn = 100
	for len(ids) > 0 {
		n := min(len(ids), perTxn)
		dels := make([]clientv3.Op, 0, n)
		for _, id := range ids[:n] {
			dels = append(dels, clientv3.OpDelete(s.layout.Receipt(name, inc, id)))
		}
		if _, err := s.cli.Txn(ctx).Then(dels...).Commit(); err != nil {
			return fmt.Errorf("tokenseq: delete receipts: %w", err)
		}
		ids = ids[n:]
	}
	return nil
}

// refusal builds the error of a failed incarnation check from the
// registration as read in the same transaction (at revision txnRev).
//
// When a registration exists it is newer than inc: superseded. When none
// exists, the incarnation may have expired, or it may have been superseded
// by a newer incarnation that has since ended too (a `submit --takeover`
// that unregistered). The first change to the registration key after inc
// tells them apart: a put is a newer incarnation (superseded), a delete is
// the end of inc's own lease (expired). If etcd's history no longer holds
// that revision (compacted), the answer is expired.
func (s *Submitter) refusal(ctx context.Context, name string, inc, txnRev int64, rr *etcdserverpb.RangeResponse) error {
	if rr != nil && len(rr.Kvs) > 0 {
		return &RefusedError{Name: name, Incarnation: inc, Current: rr.Kvs[0].ModRevision, cause: ErrSuperseded}
	}
	if next, ok := s.firstChangeAfter(ctx, s.layout.Reg(name), inc, txnRev); ok && next.Type == mvccpb.PUT {
		return &RefusedError{Name: name, Incarnation: inc, cause: ErrSuperseded}
	}
	return &RefusedError{Name: name, Incarnation: inc, cause: ErrExpired}
}

// firstChangeAfter returns the first event on key after revision rev and
// no later than until, reading etcd's history with a watch.
func (s *Submitter) firstChangeAfter(ctx context.Context, key string, rev, until int64) (*clientv3.Event, bool) {
	if rev <= 0 || until <= rev {
		return nil, false
	}
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), historyTimeout)
	defer cancel()
	for wr := range s.cli.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if wr.Err() != nil {
			return nil, false
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision <= until {
				return ev, true
			}
			return nil, false
		}
	}
	return nil, false
}

// historyTimeout bounds the history read that classifies a refusal.
const historyTimeout = 2 * time.Second
