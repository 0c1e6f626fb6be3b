// Package apiclient is a Go caller that goes through a coordinator node's
// API (pkg/apiserver) rather than to etcd directly: the path for processes
// that should share their node's group commit, or that may not reach etcd.
// A Caller is one incarnation whose lease the package keeps alive with a
// KeepAlive stream; a Session re-registers once when the lease is lost,
// however many calls fail at that moment (G9).
package apiclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Token is the token of an accepted submission.
type Token = tokenseq.Token

// Errors of the API's refusals, for errors.Is; an *Error matches the one of
// its reason.
var (
	// ErrSuperseded: a newer incarnation of the name is registered (final).
	ErrSuperseded = tokenseq.ErrSuperseded
	// ErrExpired: the incarnation's lease expired or was revoked.
	ErrExpired = tokenseq.ErrExpired
	// ErrInvalid: bad input; nothing was written.
	ErrInvalid = ops.ErrInvalid
	// ErrNameHeld: Register with IfAbsent found a live incarnation.
	ErrNameHeld = registry.ErrNameHeld
	// ErrNotAccepted: the batch was not stored and its id never will be.
	ErrNotAccepted = tokenseq.ErrNotAccepted
	// ErrOutcomeUnknown: the node could not tell whether the batch was
	// accepted.
	ErrOutcomeUnknown = tokenseq.ErrOutcomeUnknown
	// ErrPermissionDenied: the caller may not act as the name.
	ErrPermissionDenied = errors.New("apiclient: permission denied")
	// ErrUnavailable: the node or etcd could not be reached; nothing was
	// written.
	ErrUnavailable = errors.New("apiclient: unavailable")
)

// Error is a call the API refused.
type Error struct {
	// Reason is the ErrorInfo reason (apiserver.Reason*), "" when none.
	Reason string
	// Status is the gRPC status.
	Status *status.Status
}

// Error returns the status message with its reason.
func (e *Error) Error() string {
	return fmt.Sprintf("apiclient: %s: %s", e.Reason, e.Status.Message())
}

// Is matches the package's error of the reason.
func (e *Error) Is(target error) bool {
	m := map[string]error{
		apiserver.ReasonSuperseded: ErrSuperseded, apiserver.ReasonExpired: ErrExpired,
		apiserver.ReasonInvalid: ErrInvalid, apiserver.ReasonNameHeld: ErrNameHeld,
		apiserver.ReasonNotAccepted: ErrNotAccepted, apiserver.ReasonOutcomeUnknown: ErrOutcomeUnknown,
		apiserver.ReasonPermissionDenied: ErrPermissionDenied, apiserver.ReasonUnavailable: ErrUnavailable,
	}
	return m[e.Reason] == target && target != nil
}

// current is the incarnation a SUPERSEDED refusal names as current, zero
// when it names none.
func (e *Error) current() int64 {
	for _, d := range e.Status.Details() {
		if info, ok := d.(interface{ GetMetadata() map[string]string }); ok {
			n, _ := strconv.ParseInt(info.GetMetadata()["current"], 10, 64)
			return n
		}
	}
	return 0
}

// wrap turns a gRPC error into an *Error; errors without a status (a
// context's) are returned as they are.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{Reason: apiserver.ReasonOf(err), Status: st}
}

// Config configures a Client. Zero values mean the defaults noted.
type Config struct {
	// Addr is the node's API address, host:port.
	Addr string
	// TLS, when set, dials with TLS (with a client certificate for mTLS);
	// nil dials plain TCP.
	TLS *tls.Config
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return config.Errorf("apiclient", "Addr", "is empty")
	}
	return nil
}

// Client calls one node's API. It is safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	api  pb.CoordinatorClient
}

// New returns a Client; it does not wait for the node to answer.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cr := insecure.NewCredentials()
	if cfg.TLS != nil {
		cr = credentials.NewTLS(cfg.TLS)
	}
	conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(cr))
	if err != nil {
		return nil, fmt.Errorf("apiclient: %w", err)
	}
	return &Client{conn: conn, api: pb.NewCoordinatorClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// API returns the generated gRPC client, for the calls this package does
// not wrap.
func (c *Client) API() pb.CoordinatorClient { return c.api }

// WaitApplied blocks until tok is applied (G8) or ctx ends.
func (c *Client) WaitApplied(ctx context.Context, tok Token) error {
	_, err := c.api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: tok.String()})
	return wrap(err)
}

// RegisterConfig configures Register. Zero values mean the defaults noted.
type RegisterConfig struct {
	// TTL is the lease TTL, whole seconds, at least 1s; zero means
	// registry.DefaultTTL.
	TTL time.Duration
	// IfAbsent refuses with ErrNameHeld rather than superseding a live
	// incarnation.
	IfAbsent bool
	// WaitDrained waits until the earlier incarnations' operations are
	// applied (G7).
	WaitDrained bool
}

// Validate checks the config; its errors are *config.FieldError.
func (c *RegisterConfig) Validate() error {
	if c.TTL != 0 && (c.TTL < time.Second || c.TTL%time.Second != 0) {
		return &config.FieldError{Pkg: "apiclient", Field: "TTL", Rule: c.TTL.String() + " is not whole seconds of at least 1s", Err: registry.ErrBadTTL}
	}
	return nil
}

// Register registers name and keeps its lease alive with a KeepAlive
// stream until Close or until the incarnation ends.
func (c *Client) Register(ctx context.Context, name string, cfg RegisterConfig) (*Caller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r, err := c.api.Register(ctx, &pb.RegisterRequest{
		Name: name, TtlSeconds: int32(cfg.TTL / time.Second), IfAbsent: cfg.IfAbsent, WaitDrained: cfg.WaitDrained,
	})
	if err != nil {
		return nil, wrap(err)
	}
	return newCaller(c, name, r), nil
}
