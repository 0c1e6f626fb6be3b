package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// ErrorDomain is the domain of every ErrorInfo detail the API returns.
const ErrorDomain = "coordinator.v1"

// Reasons of the ErrorInfo detail of a refused call, with the gRPC code
// (and, through the gateway, the HTTP status) each comes with.
const (
	// ReasonInvalid: bad input; nothing was written. InvalidArgument, 400.
	ReasonInvalid = "INVALID"
	// ReasonSuperseded: a newer incarnation of the name is registered; final
	// for this incarnation. Aborted, 409.
	ReasonSuperseded = "SUPERSEDED"
	// ReasonExpired: the incarnation's lease expired or was revoked; register
	// again. NotFound, 404.
	ReasonExpired = "EXPIRED"
	// ReasonNameHeld: Register with if_absent found a live incarnation.
	// AlreadyExists, 409.
	ReasonNameHeld = "NAME_HELD"
	// ReasonNotAccepted: the batch was not stored and its id never will be;
	// resend the batch under a new batch id. Unavailable, 503.
	ReasonNotAccepted = "NOT_ACCEPTED"
	// ReasonOutcomeUnknown: etcd's reply was lost and no lookup could tell
	// whether the batch was accepted. Unknown, 500.
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
	// ReasonPermissionDenied: the caller may not act as the name (client
	// certificate), or etcd's access control refused the node.
	// PermissionDenied, 403.
	ReasonPermissionDenied = "PERMISSION_DENIED"
	// ReasonUnavailable: etcd could not be reached, or the node is stopping;
	// nothing was written. Unavailable, 503.
	ReasonUnavailable = "UNAVAILABLE"
	// ReasonTimeout: WaitApplied's timeout passed first. DeadlineExceeded,
	// 504.
	ReasonTimeout = "TIMEOUT"
	// ReasonTooLarge: an HTTP body over Config.MaxBodyBytes.
	// ResourceExhausted, 413.
	ReasonTooLarge = "TOO_LARGE"
)

// ReasonOf returns the reason of an error the API returned, "" when it
// carries none.
func ReasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == ErrorDomain {
			return info.Reason
		}
	}
	return ""
}

// statusError returns a status error with an ErrorInfo detail.
func statusError(code codes.Code, reason, msg string, meta map[string]string) error {
	st := status.New(code, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// invalid is the status of bad input.
func invalid(format string, args ...any) error {
	return statusError(codes.InvalidArgument, ReasonInvalid, fmt.Sprintf(format, args...), nil)
}

// denied is the status of a call that may not act as name.
func denied(name, why string) error {
	return statusError(codes.PermissionDenied, ReasonPermissionDenied,
		fmt.Sprintf("may not act as %q: %s", name, why), map[string]string{"name": name})
}

// expired is the status of an incarnation whose lease is gone.
func expired(name string, inc int64) error {
	return statusError(codes.NotFound, ReasonExpired, fmt.Sprintf("%q incarnation %d expired", name, inc),
		map[string]string{"name": name, "incarnation": strconv.FormatInt(inc, 10)})
}

// superseded is the status of an incarnation replaced by current (zero:
// unknown).
func superseded(name string, inc, current int64) error {
	meta := map[string]string{"name": name, "incarnation": strconv.FormatInt(inc, 10)}
	msg := fmt.Sprintf("%q incarnation %d superseded", name, inc)
	if current != 0 {
		meta["current"] = strconv.FormatInt(current, 10)
		msg += fmt.Sprintf(" by incarnation %d", current)
	}
	return statusError(codes.Aborted, ReasonSuperseded, msg, meta)
}

// toStatus maps an error of the packages the server calls to a status.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && ReasonOf(err) != "" {
		return err
	}
	var refused *tokenseq.RefusedError
	switch {
	case errors.As(err, &refused) && errors.Is(err, tokenseq.ErrSuperseded):
		return superseded(refused.Name, refused.Incarnation, refused.Current)
	case errors.As(err, &refused):
		return expired(refused.Name, refused.Incarnation)
	case errors.Is(err, ops.ErrInvalid), errors.Is(err, keyspace.ErrInvalidName),
		errors.Is(err, config.ErrBadConfig), errors.Is(err, tokenseq.ErrBadToken):
		return invalid("%v", err)
	case errors.Is(err, registry.ErrNameHeld):
		return statusError(codes.AlreadyExists, ReasonNameHeld, err.Error(), nil)
	case errors.Is(err, tokenseq.ErrVoided), errors.Is(err, tokenseq.ErrNotAccepted):
		return statusError(codes.Unavailable, ReasonNotAccepted, err.Error()+"; resend under a new batch id", nil)
	case errors.Is(err, tokenseq.ErrOutcomeUnknown):
		return statusError(codes.Unknown, ReasonOutcomeUnknown, err.Error(), nil)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return statusError(codes.PermissionDenied, ReasonPermissionDenied, err.Error(), nil)
	case errors.Is(err, context.DeadlineExceeded):
		return statusError(codes.DeadlineExceeded, ReasonTimeout, err.Error(), nil)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return statusError(codes.Unavailable, ReasonUnavailable, err.Error(), nil)
}
