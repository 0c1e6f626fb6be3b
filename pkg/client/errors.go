package client

import (
	"errors"
	"fmt"

	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Errors of every caller, for errors.Is. They are pkg/apierr's, so a
// caller through a node's API (pkg/apiclient) matches the same values.
var (
	// ErrSuperseded: a newer incarnation of the name was registered (final).
	ErrSuperseded = apierr.ErrSuperseded
	// ErrExpired: the incarnation's lease expired or was revoked.
	ErrExpired = apierr.ErrExpired
	// ErrNameHeld: IfAbsent was set and a live process holds the name.
	ErrNameHeld = apierr.ErrNameHeld
	// ErrInvalid: bad input (key, value, expiration, name); nothing was written.
	ErrInvalid = apierr.ErrInvalid
	// ErrInvalidName: a bad registration name or namespace.
	ErrInvalidName = keyspace.ErrInvalidName
	// ErrBadConfig: New, Register or NewSession was given an invalid config.
	// The error names the field; a bad namespace also matches ErrInvalidName.
	ErrBadConfig = config.ErrBadConfig
	// ErrPermissionDenied: etcd's access control refused the write: the
	// etcd user the Client authenticates as may not write the keys of the
	// name (another caller's name, say). Nothing was written. It is etcd's
	// rpctypes.ErrPermissionDenied, so either matches.
	ErrPermissionDenied = apierr.ErrPermissionDenied
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
	ErrOutcomeUnknown = apierr.ErrOutcomeUnknown
	// ErrNotAccepted: Session.Resolve found that a submission was not
	// accepted, and never will be.
	ErrNotAccepted = apierr.ErrNotAccepted
)

// UnknownOutcomeError is the error of a submission whose reply was lost
// when a lookup could not settle whether its batch was accepted (etcd was
// unreachable until ctx ended, or the incarnation and its receipts are
// gone). It wraps ErrOutcomeUnknown and the error that lost the reply; pass
// it to Session.Resolve to ask again.
type UnknownOutcomeError = tokenseq.UnknownOutcomeError

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
