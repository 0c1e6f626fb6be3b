// Package apierr holds what a refusal of the caller API means, once, for
// the server that sends it (pkg/apiserver) and the clients that read it
// (pkg/apiclient, and pkg/client for the sentinels): the ErrorInfo reasons,
// the gRPC code each travels with, and the sentinel error each matches
// with errors.Is. A caller that goes to etcd directly and one that goes
// through a node's API test the same errors.
package apierr

import (
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Domain is the domain of every ErrorInfo detail the API returns.
const Domain = "coordinator.v1"

// Reasons of the ErrorInfo detail of a refused call. Each comes with one
// gRPC code (Code), and through the HTTP gateway with that code's status.
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
	// ReasonTooLarge: an HTTP body over the server's limit.
	// ResourceExhausted, 413.
	ReasonTooLarge = "TOO_LARGE"
	// ReasonExhausted: a limit of the node (a caller identity's rate, the
	// calls, streams or registrations it holds) refused the call; nothing
	// was written. Retry after the RetryInfo delay (HTTP: Retry-After).
	// ResourceExhausted, 429.
	ReasonExhausted = "RESOURCE_EXHAUSTED"
	// ReasonNoSpace: etcd raised its NOSPACE alarm and refuses every
	// write until an operator frees space (docs/deploy.md); nothing was
	// written. ResourceExhausted, 429.
	ReasonNoSpace = "NO_SPACE"
)

// Sentinel errors of the reasons, for errors.Is. Where a package below
// the API has the error already, the sentinel is that error, so a caller
// of pkg/client and a caller of pkg/apiclient match the same values.
var (
	// ErrSuperseded: a newer incarnation of the name is registered (final).
	ErrSuperseded = tokenseq.ErrSuperseded
	// ErrExpired: the incarnation's lease expired or was revoked.
	ErrExpired = tokenseq.ErrExpired
	// ErrInvalid: bad input; nothing was written.
	ErrInvalid = ops.ErrInvalid
	// ErrNameHeld: a registration with IfAbsent found a live incarnation.
	ErrNameHeld = registry.ErrNameHeld
	// ErrNotAccepted: the batch was not stored and its id never will be.
	ErrNotAccepted = tokenseq.ErrNotAccepted
	// ErrOutcomeUnknown: whether the batch was accepted cannot be told.
	ErrOutcomeUnknown = tokenseq.ErrOutcomeUnknown
	// ErrPermissionDenied: the caller may not act as the name. It is etcd's
	// rpctypes.ErrPermissionDenied, so either matches.
	ErrPermissionDenied = rpctypes.ErrPermissionDenied
	// ErrUnavailable: the node or etcd could not be reached; nothing was
	// written.
	ErrUnavailable = errors.New("coordinator: unavailable")
	// ErrTimeout: a wait's own timeout passed first.
	ErrTimeout = errors.New("coordinator: timeout")
	// ErrTooLarge: a request over the server's size limit.
	ErrTooLarge = errors.New("coordinator: request too large")
	// ErrExhausted: a limit of the node refused the call; retry later.
	ErrExhausted = errors.New("coordinator: limit reached")
	// ErrNoSpace: etcd is out of space and refuses every write. It is
	// etcd's rpctypes.ErrNoSpace, so either matches.
	ErrNoSpace = rpctypes.ErrNoSpace
)

// reason is what one reason means.
type reason struct {
	code codes.Code
	err  error
}

// reasons is the one table of the API's reasons.
var reasons = map[string]reason{
	ReasonInvalid:          {codes.InvalidArgument, ErrInvalid},
	ReasonSuperseded:       {codes.Aborted, ErrSuperseded},
	ReasonExpired:          {codes.NotFound, ErrExpired},
	ReasonNameHeld:         {codes.AlreadyExists, ErrNameHeld},
	ReasonNotAccepted:      {codes.Unavailable, ErrNotAccepted},
	ReasonOutcomeUnknown:   {codes.Unknown, ErrOutcomeUnknown},
	ReasonPermissionDenied: {codes.PermissionDenied, ErrPermissionDenied},
	ReasonUnavailable:      {codes.Unavailable, ErrUnavailable},
	ReasonTimeout:          {codes.DeadlineExceeded, ErrTimeout},
	ReasonTooLarge:         {codes.ResourceExhausted, ErrTooLarge},
	ReasonExhausted:        {codes.ResourceExhausted, ErrExhausted},
	ReasonNoSpace:          {codes.ResourceExhausted, ErrNoSpace},
}

// Code is the gRPC code a reason travels with; Unknown for a reason the
// table lacks.
func Code(reason string) codes.Code {
	if r, ok := reasons[reason]; ok {
		return r.code
	}
	return codes.Unknown
}

// Sentinel is the error a reason matches, nil for a reason the table lacks.
func Sentinel(reason string) error { return reasons[reason].err }

// New returns the status error of a refusal: the reason's code, msg, and an
// ErrorInfo detail with the reason and meta.
func New(reason, msg string, meta map[string]string) error {
	st := status.New(Code(reason), msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: meta}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// Invalid is the status error of bad input.
func Invalid(format string, args ...any) error {
	return New(ReasonInvalid, fmt.Sprintf(format, args...), nil)
}

// info returns the API's ErrorInfo detail of err, nil when it has none.
func info(err error) *errdetails.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok && i.Domain == Domain {
			return i
		}
	}
	return nil
}

// ReasonOf returns the reason of an error the API returned, "" when it
// carries none.
func ReasonOf(err error) string {
	if i := info(err); i != nil {
		return i.Reason
	}
	return ""
}

// Error is a call the API refused, as a client sees it.
type Error struct {
	// Reason is the ErrorInfo reason (Reason*), "" when none.
	Reason string
	// Status is the gRPC status.
	Status *status.Status
}

// FromStatus turns a gRPC error into an *Error; errors without a status
// (a context's) and nil are returned as they are.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{Reason: ReasonOf(err), Status: st}
}

// Error returns the status message with its reason.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Reason, e.Status.Message())
}

// Is matches the sentinel of the reason.
func (e *Error) Is(target error) bool {
	s := Sentinel(e.Reason)
	return s != nil && s == target
}

// Meta returns the ErrorInfo metadata value of key, "" when absent.
func (e *Error) Meta(key string) string {
	if i := info(e.Status.Err()); i != nil {
		return i.Metadata[key]
	}
	return ""
}

// Current is the incarnation a SUPERSEDED refusal names as current, zero
// when it names none.
func (e *Error) Current() int64 {
	n, _ := strconv.ParseInt(e.Meta("current"), 10, 64)
	return n
}
