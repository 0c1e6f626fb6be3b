package tokenseq

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/pkg/config"
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
	// Current is the incarnation registered when the refusal was read, zero
	// when none was.
	Current int64
	cause   error
}

// Error names the incarnation refused and, when known, the current one.
func (e *RefusedError) Error() string {
	if e.Current != 0 {
		return fmt.Sprintf("%v: %q incarnation %d, current incarnation %d", e.cause, e.Name, e.Incarnation, e.Current)
	}
	return fmt.Sprintf("%v: %q incarnation %d", e.cause, e.Name, e.Incarnation)
}

// Unwrap returns ErrSuperseded or ErrExpired.
func (e *RefusedError) Unwrap() error { return e.cause }

// SubmitterConfig configures a Submitter. Zero values mean the defaults
// noted.
type SubmitterConfig struct {
	// Etcd is the etcd client the batches are stored with.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout.
	Layout keyspace.Layout
	// Limits validate every batch before it is sent; zero means
	// memcached's defaults.
	Limits ops.Limits
	// MaxGroupBatches bounds the submissions that share one transaction;
	// 1 sends every submission in a transaction of its own. Zero means
	// DefaultMaxGroupBatches.
	MaxGroupBatches int
	// MaxInFlight bounds the transactions under way at once; zero means
	// DefaultMaxInFlight.
	MaxInFlight int
	// TracerProvider, when set, traces submissions and their group
	// transactions (see SpanSubmit, SpanGroupTxn), and stores a sampled
	// submission's trace context in its record, so that the leader's apply
	// of it joins the trace. Such a record is version 3 (ops.RecordVersion),
	// which nodes before that version set aside as undecodable: turn
	// tracing on once every node reads it. Nil traces nothing and stores
	// the records every version reads.
	TracerProvider trace.TracerProvider
}

// Validate checks the config; its errors are *config.FieldError.
func (c *SubmitterConfig) Validate() error {
	switch {
	case c.Etcd == nil:
		return config.Errorf("tokenseq", "Etcd", "is nil")
	case c.Layout.Prefix() == "":
		return config.Errorf("tokenseq", "Layout", "is empty")
	case c.MaxGroupBatches < 0:
		return config.Errorf("tokenseq", "MaxGroupBatches", "%d is negative", c.MaxGroupBatches)
	case c.MaxInFlight < 0:
		return config.Errorf("tokenseq", "MaxInFlight", "%d is negative", c.MaxInFlight)
	}
	return nil
}

// withDefaults fills in the defaults of unset fields.
func (c SubmitterConfig) withDefaults() SubmitterConfig {
	c.MaxGroupBatches = cmp.Or(c.MaxGroupBatches, DefaultMaxGroupBatches)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	return c
}

// Submitter stores batches for callers. Concurrent submissions share etcd
// transactions (group commit, see SubmitterConfig.MaxGroupBatches): a
// Submitter is meant to be shared by every caller of a process.
type Submitter struct {
	cli    *clientv3.Client
	layout keyspace.Layout
	cfg    SubmitterConfig // with defaults
	tracer trace.Tracer    // nil: no tracing

	mu        sync.Mutex
	queue     []*submission // waiting for a transaction, oldest first
	inflight  int           // group transactions under way
	lastGroup int           // submissions in the group sent last

	// failedTxn, when set, runs after a transaction failed at revision rev
	// and before the read that settles its members (tests).
	failedTxn func(rev int64)
}

// NewSubmitter returns a Submitter; it returns a *config.FieldError for an
// invalid cfg.
func NewSubmitter(cfg SubmitterConfig) (*Submitter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSubmitter(cfg), nil
}

// newSubmitter is NewSubmitter of a valid cfg.
func newSubmitter(cfg SubmitterConfig) *Submitter {
	cfg = cfg.withDefaults()
	s := &Submitter{cli: cfg.Etcd, layout: cfg.Layout, cfg: cfg}
	if cfg.TracerProvider != nil {
		s.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	return s
}

// Limits returns the validation limits the submitter enforces.
func (s *Submitter) Limits() ops.Limits { return s.cfg.Limits }

// NewBatchID returns a new submission identifier: 16 bytes in hex, a
// timestamp in nanoseconds followed by 8 random bytes. The timestamp strictly
// increases within the process, so ids made here sort in the order they were
// made and never repeat; the random part keeps ids of different processes
// apart.
//
// The order is for etcd: it indexes every key ever written until compaction,
// and a batch key is new for every submission. With random ids each insert
// lands at a random place in that index; with ordered ids the inserts of one
// name land next to each other, on the part of the index already in the
// CPU's caches (BENCHMARKS.md has the figures).
func NewBatchID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(nextBatchIDTime()))
	if _, err := rand.Read(b[8:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// lastBatchIDTime is the timestamp of the newest id NewBatchID made.
var lastBatchIDTime atomic.Int64

// nextBatchIDTime returns the wall clock in nanoseconds, or one more than the
// last value returned when the clock has not moved past it.
func nextBatchIDTime() int64 { return batchIDTimeAt(time.Now().UnixNano()) }

// batchIDTimeAt returns clock, or one more than the last value returned when
// clock is not past it (a coarse clock, or one set back).
func batchIDTimeAt(clock int64) int64 {
	for {
		last := lastBatchIDTime.Load()
		next := max(clock, last+1)
		if lastBatchIDTime.CompareAndSwap(last, next) {
			return next
		}
	}
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
	// accepted and never can be.
	ErrNotAccepted = errors.New("tokenseq: submission was not accepted")
	// ErrOutcomeUnknown is returned by Lookup when nothing left in etcd can
	// tell whether the submission was accepted.
	ErrOutcomeUnknown = errors.New("tokenseq: outcome of submission unknown")
	// ErrLeaseMismatch is returned by SubmitRequest and Lookup when a
	// request's Lease is not the lease its incarnation's registration
	// lives under. Nothing was written. It also matches ops.ErrInvalid.
	ErrLeaseMismatch = fmt.Errorf("%w: lease is not the incarnation's lease", ops.ErrInvalid)
)

// leaseMismatch is the error of req, whose Lease differs from the lease
// of its incarnation's registration.
func leaseMismatch(req Request, actual clientv3.LeaseID) error {
	return fmt.Errorf("tokenseq: %q incarnation %d lives under lease %d, not %d: %w",
		req.Name, req.Incarnation, actual, req.Lease, ErrLeaseMismatch)
}

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
	// Lease, when non-zero, must be the incarnation's lease (the
	// transaction checks it; another is ErrLeaseMismatch): a receipt is
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
	if err := ops.ValidateBatch(req.Ops, s.cfg.Limits); err != nil {
		return Zero, err
	}
	fresh := req.ID == ""
	if fresh {
		req.ID = NewBatchID()
	}
	if err := keyspace.ValidateName(req.ID); err != nil {
		return Zero, fmt.Errorf("batch id: %w", err)
	}
	ctx, span := s.startSubmit(ctx, req)
	c := s.newSubmission(ctx, req)
	// A random id of our own cannot be stored already, nor sent again: the
	// transaction need not check for it.
	c.freshID = fresh
	if span == nil {
		return s.submit(ctx, c)
	}
	if span.IsRecording() {
		c.span = span
	}
	tok, err := s.submit(ctx, c)
	endSubmit(span, tok, err)
	return tok, err
}

// findings is what the reads of a failed submission or lookup found.
type findings struct {
	reg        int64            // ModRevision of the registration, 0 when none
	regLease   clientv3.LeaseID // the registration's lease, 0 when none
	batch      Token            // token of the batch, Zero when none
	receipt    string           // receipt value, "" when none
	receiptTok Token            // token recorded by an accepted receipt
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
		f.reg, f.regLease = kv.ModRevision, clientv3.LeaseID(kv.Lease)
	}
	if kv := first(1); kv != nil {
		f.batch = batchToken(kv)
	}
	if kv := first(2); kv != nil {
		f.receipt, f.receiptTok = string(kv.Value), Token{Revision: kv.ModRevision}
		f.receiptTok.Index, _ = acceptedIndex(f.receipt)
	}
	return f
}

// accepted returns the token the findings show the submission was accepted
// with, if they do.
func (f findings) accepted() (Token, bool) {
	if !f.batch.IsZero() {
		return f.batch, true
	}
	if _, ok := acceptedIndex(f.receipt); ok {
		return f.receiptTok, true
	}
	return Zero, false
}

// batchToken is the token of a stored batch: its revision, and the index the
// record carries (zero for a record that cannot be read: the revision alone
// is then the best answer).
func batchToken(kv *mvccpb.KeyValue) Token {
	idx, _ := ops.RecordIndex(kv.Value)
	return Token{Revision: kv.ModRevision, Index: idx}
}

// receiptValue is the value of the receipt of a batch accepted with the
// given index: ReceiptAccepted, followed by "/INDEX" when the index is not
// zero.
func receiptValue(index uint32) string {
	if index == 0 {
		return ReceiptAccepted
	}
	return ReceiptAccepted + "/" + strconv.FormatUint(uint64(index), 10)
}

// acceptedIndex parses a receipt value; ok is false for anything but an
// accepted receipt.
func acceptedIndex(v string) (index uint32, ok bool) {
	rest, found := strings.CutPrefix(v, ReceiptAccepted)
	switch {
	case !found:
		return 0, false
	case rest == "":
		return 0, true
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(rest, "/"), 10, 32)
	if err != nil || rest[0] != '/' {
		return 0, false
	}
	return uint32(n), true
}

// Lookup finds out whether the submission req (Name, Incarnation, ID and
// Lease; Ops are ignored) was accepted, after SubmitRequest returned an error
// that left the outcome unknown. It returns the batch's token when it was
// accepted, an error wrapping ErrNotAccepted when it was not and never will
// be, an error wrapping ErrOutcomeUnknown when nothing left in etcd can
// tell, and any other error when etcd could not be asked (try again).
//
// With a Lease (receipts on), Lookup settles the outcome: when the
// incarnation is current and neither the batch nor its receipt exists, it
// writes a voided receipt in the same transaction, so a copy of the
// submission still in flight is refused with ErrVoided and "not accepted"
// stays true. When the incarnation is not current, nothing can be accepted
// under it from then on; the answer is then certain as long as the lease
// lives (so its receipts do), and ErrOutcomeUnknown once the lease is gone
// and the batch has been applied.
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
			return batchToken(resp.Kvs[0]), nil
		}
		return Zero, fmt.Errorf("%w: %s: no batch pending and no receipt kept", ErrOutcomeUnknown, desc)
	}
	rk := s.layout.Receipt(name, inc, id)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(regKey), "=", inc),
			clientv3.Compare(clientv3.LeaseValue(regKey), "=", req.Lease),
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
	if tok, ok := f.accepted(); ok {
		return tok, nil
	}
	if f.receipt != "" {
		return Zero, fmt.Errorf("%w: %s (voided)", ErrNotAccepted, desc)
	}
	if f.reg == inc && f.regLease != req.Lease {
		return Zero, leaseMismatch(req, f.regLease)
	}
	// The incarnation is not current, so nothing more can be accepted under
	// it. If its lease is alive at this point, it was alive when the receipt
	// was read, and an accepted submission would have left one.
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
// the end of inc's own lease (expired). If etcd's history does not hold
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
