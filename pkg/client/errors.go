package client

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Errors of every caller, for errors.Is.
var (
	// ErrSuperseded: a newer incarnation of the name was registered (final).
	ErrSuperseded = tokenseq.ErrSuperseded
	// ErrExpired: the incarnation's lease expired or was revoked.
	ErrExpired = tokenseq.ErrExpired
	// ErrNameHeld: IfAbsent was set and a live process holds the name.
	ErrNameHeld = registry.ErrNameHeld
	// ErrInvalid: bad input (key, value, expiration, name); nothing was written.
	ErrInvalid = ops.ErrInvalid
	// ErrInvalidName: a bad registration name or namespace.
	ErrInvalidName = keyspace.ErrInvalidName
	// ErrBadConfig: New, Register or NewSession was given an invalid config.
	// The error names the field; a bad namespace also matches ErrInvalidName.
	ErrBadConfig = config.ErrBadConfig
	// ErrPermissionDenied: etcd's access control refused the write: the
	// etcd user the Client authenticates as may not write the keys of the
	// name (another caller's name, say). Nothing was written. It is etcd's
	// rpctypes.ErrPermissionDenied, so either matches.
	ErrPermissionDenied = rpctypes.ErrPermissionDenied
)

// denied adds the name to an error of etcd's access control, so that the
// refusal says which name the user may not write; other errors are
// returned as they are.
func denied(name string, err error) error {
	if err == nil || !errors.Is(err, ErrPermissionDenied) {
		return err
	}
	return fmt.Errorf("client: %q: the etcd user may not write this name's keys: %w", name, err)
}

// Errors of a Session, for errors.Is.
var (
	// ErrSessionSuperseded is the final error of a session whose name was
	// registered by another live process. Errors wrapping it also wrap
	// ErrSuperseded.
	ErrSessionSuperseded = errors.New("client: session superseded")
	// ErrSessionClosed is returned by a session's methods after Close.
	ErrSessionClosed = errors.New("client: session closed")
	// ErrOutcomeUnknown: a submission's reply was lost and whether it was
	// accepted cannot be told (yet). Errors wrapping it are
	// *UnknownOutcomeError.
	ErrOutcomeUnknown = tokenseq.ErrOutcomeUnknown
	// ErrNotAccepted: Session.Resolve found that a submission was not
	// accepted, and never will be.
	ErrNotAccepted = tokenseq.ErrNotAccepted
)

// UnknownOutcomeError is the error of a submission whose reply was lost
// when a lookup could not settle whether its batch was accepted (etcd was
// unreachable until ctx ended, or the incarnation and its receipts are
// gone). It wraps ErrOutcomeUnknown and the error that lost the reply.
type UnknownOutcomeError struct {
	// Name is the registration name the batch was sent under.
	Name string
	// Incarnation is the incarnation the batch was sent under.
	Incarnation int64
	// ID is the batch id.
	ID string
	// Err is the error that left the outcome unknown.
	Err   error
	lease clientv3.LeaseID
}

// Error describes the batch and the cause.
func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("client: outcome of batch %s of %q incarnation %d unknown: %v",
		e.ID, e.Name, e.Incarnation, e.Err)
}

// Unwrap returns ErrOutcomeUnknown and the cause.
func (e *UnknownOutcomeError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }

// supersededError is the final error of a session whose incarnation inc
// of name was replaced by incarnation by (zero: unknown) of another process.
func supersededError(name string, inc, by int64) error {
	if by == 0 {
		return fmt.Errorf("%w: %q incarnation %d: the name is held by another process: %w",
			ErrSessionSuperseded, name, inc, ErrSuperseded)
	}
	return fmt.Errorf("%w: %q incarnation %d replaced by incarnation %d of another process: %w",
		ErrSessionSuperseded, name, inc, by, ErrSuperseded)
}
