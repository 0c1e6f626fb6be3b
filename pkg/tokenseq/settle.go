package tokenseq

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// UnknownOutcomeError is the error of a submission whose reply was lost
// when no lookup could settle whether its batch was accepted (etcd was
// unreachable until the context ended, or the incarnation and its receipts
// are gone). It wraps ErrOutcomeUnknown and the error that lost the reply,
// and carries what Resolve needs to ask again later.
type UnknownOutcomeError struct {
	// Name is the registration name the batch was sent under.
	Name string
	// Incarnation is the incarnation the batch was sent under.
	Incarnation int64
	// ID is the batch id.
	ID string
	// Lease is the lease the submission's receipt was stored under, zero
	// when it had none.
	Lease clientv3.LeaseID
	// Err is the error that left the outcome unknown.
	Err error
}

// Error describes the batch and the cause.
func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("outcome of batch %s of %q incarnation %d unknown: %v", e.ID, e.Name, e.Incarnation, e.Err)
}

// Unwrap returns ErrOutcomeUnknown and the cause.
func (e *UnknownOutcomeError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }

// Request is the submission to look up again.
func (e *UnknownOutcomeError) Request() Request {
	return Request{Name: e.Name, Incarnation: e.Incarnation, ID: e.ID, Lease: e.Lease}
}

// IsOutcomeUnknown reports whether an error of SubmitRequest leaves open
// whether the batch was stored: every error but a refusal, bad input, a
// voided id and a refusal by etcd's access control, which all store
// nothing. Settle such a submission with Settle.
func IsOutcomeUnknown(err error) bool {
	switch {
	case err == nil, errors.As(err, new(*RefusedError)), errors.Is(err, ops.ErrInvalid),
		errors.Is(err, keyspace.ErrInvalidName), errors.Is(err, ErrVoided),
		errors.Is(err, rpctypes.ErrPermissionDenied):
		return false
	}
	return true
}

// Settle finds out whether req was accepted after SubmitRequest returned
// cause, an error that left the outcome open (IsOutcomeUnknown). It asks
// Lookup, again after a backoff while etcd cannot be reached, until an
// answer comes or ctx ends. It returns the batch's token when it was
// accepted, an error wrapping ErrNotAccepted when it was not (and, with a
// Lease, never will be), and an *UnknownOutcomeError when nothing can tell
// or ctx ended first. lookups, when not nil, counts the lookups made.
//
// This is the one settle protocol: pkg/client's session and the API
// server both use it.
func (s *Submitter) Settle(ctx context.Context, req Request, cause error, lookups *atomic.Uint64) (Token, error) {
	unknown := func(err error) error {
		return &UnknownOutcomeError{Name: req.Name, Incarnation: req.Incarnation, ID: req.ID, Lease: req.Lease, Err: err}
	}
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		if err := ctx.Err(); err != nil {
			return Zero, unknown(fmt.Errorf("%w (submission: %w)", err, cause))
		}
		if lookups != nil {
			lookups.Add(1)
		}
		tok, err := s.Lookup(ctx, req)
		switch {
		case err == nil, errors.Is(err, ErrNotAccepted), errors.Is(err, ErrLeaseMismatch):
			return tok, err
		case errors.Is(err, ErrOutcomeUnknown):
			return Zero, unknown(fmt.Errorf("%w (submission: %w)", err, cause))
		}
		if !retry.Sleep(ctx, backoff.Next()) {
			return Zero, unknown(fmt.Errorf("%w (submission: %w; lookup: %w)", ctx.Err(), cause, err))
		}
	}
}

// SubmitSettled is SubmitRequest followed, when the reply was lost, by
// Settle: its errors are SubmitRequest's refusals and bad input, an error
// wrapping ErrNotAccepted, or an *UnknownOutcomeError.
func (s *Submitter) SubmitSettled(ctx context.Context, req Request, lookups *atomic.Uint64) (Token, error) {
	if req.ID == "" {
		req.ID = NewBatchID()
	}
	tok, err := s.SubmitRequest(ctx, req)
	if IsOutcomeUnknown(err) {
		return s.Settle(ctx, req, err, lookups)
	}
	return tok, err
}
