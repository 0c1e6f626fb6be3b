package tokenseq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
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
func (s *Submitter) Submit(ctx context.Context, name string, inc int64, id string, batch []ops.Op) (Token, error) {
	if err := keyspace.ValidateName(name); err != nil {
		return Zero, err
	}
	if err := ops.ValidateBatch(batch, s.limits); err != nil {
		return Zero, err
	}
	if id == "" {
		id = NewBatchID()
	}
	if err := keyspace.ValidateName(id); err != nil {
		return Zero, fmt.Errorf("batch id: %w", err)
	}
	rec := (&ops.Batch{Name: name, Incarnation: inc, ID: id, Ops: batch}).Encode()
	regKey := s.layout.Reg(name)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(regKey), "=", inc)).
		Then(clientv3.OpPut(s.layout.Batch(name, inc, id), string(rec))).
		Else(clientv3.OpGet(regKey)).
		Commit()
	if err != nil {
		return Zero, fmt.Errorf("tokenseq: submit: %w", err)
	}
	if !resp.Succeeded {
		return Zero, refusal(name, inc, resp.Responses[0].GetResponseRange())
	}
	return Token{Revision: resp.Header.Revision}, nil
}

// refusal builds the error of a failed incarnation check from the
// registration as read in the same transaction.
func refusal(name string, inc int64, rr *etcdserverpb.RangeResponse) error {
	if rr != nil && len(rr.Kvs) > 0 {
		cur := rr.Kvs[0].ModRevision
		if cur > inc {
			return &RefusedError{Name: name, Incarnation: inc, Current: cur, cause: ErrSuperseded}
		}
		// A registration older than inc cannot exist unless inc was never a
		// real incarnation of name; the caller's incarnation is not current.
		return &RefusedError{Name: name, Incarnation: inc, Current: cur, cause: ErrSuperseded}
	}
	return &RefusedError{Name: name, Incarnation: inc, cause: ErrExpired}
}
