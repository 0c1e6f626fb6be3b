// Package apiclient is a Go caller that goes through a coordinator node's
// API rather than to etcd directly: the path for processes
// that should share their node's group commit, or that may not reach etcd.
// A Caller is one incarnation whose lease the package keeps alive, with
// those of the Client's other callers, on the Client's one KeepAliveMany
// stream; a Session re-registers once when the lease is lost, however many
// calls fail at that moment (G9).
package apiclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/stats"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Token is the token of an accepted submission.
type Token = tokenseq.Token

// Errors of the API's refusals, for errors.Is; an *Error matches the one of
// its reason. They are pkg/apierr's, so pkg/client's callers match the
// same values.
var (
	// ErrSuperseded: a newer incarnation of the name is registered (final).
	ErrSuperseded = apierr.ErrSuperseded
	// ErrExpired: the incarnation's lease expired or was revoked.
	ErrExpired = apierr.ErrExpired
	// ErrInvalid: bad input; nothing was written.
	ErrInvalid = apierr.ErrInvalid
	// ErrNameHeld: Register with IfAbsent found a live incarnation.
	ErrNameHeld = apierr.ErrNameHeld
	// ErrNotAccepted: the batch was not stored and its id never will be.
	ErrNotAccepted = apierr.ErrNotAccepted
	// ErrOutcomeUnknown: the node could not tell whether the batch was
	// accepted.
	ErrOutcomeUnknown = apierr.ErrOutcomeUnknown
	// ErrPermissionDenied: the caller may not act as the name.
	ErrPermissionDenied = apierr.ErrPermissionDenied
	// ErrUnavailable: the node or etcd could not be reached; nothing was
	// written.
	ErrUnavailable = apierr.ErrUnavailable
	// ErrTimeout: WaitApplied's own timeout passed first.
	ErrTimeout = apierr.ErrTimeout
	// ErrExhausted: a limit of the node refused the call; retry after its
	// RetryInfo delay.
	ErrExhausted = apierr.ErrExhausted
	// ErrNoSpace: etcd is out of space and refuses every write.
	ErrNoSpace = apierr.ErrNoSpace
)

// Error is a call the API refused; see pkg/apierr.
type Error = apierr.Error

// wrap turns a gRPC error into an *Error; errors without a status (a
// context's) are returned as they are.
func wrap(err error) error { return apierr.FromStatus(err) }

// Config configures a Client. Zero values mean the defaults noted.
type Config struct {
	// Addr is the node's API address, host:port.
	Addr string
	// Addrs are more nodes' API addresses. With several, a call whose
	// node is gone goes to the next one (gRPC's pick_first), and the
	// Client's keep-alive stream is opened again there with the same
	// incarnations, well within the leases' TTLs.
	Addrs []string
	// TLS, when set, dials with TLS (with a client certificate for mTLS);
	// nil dials plain TCP.
	TLS *tls.Config
	// TracerProvider makes the client span of each call (otelgrpc); nil
	// means OpenTelemetry's global provider, which makes none until the
	// process sets one. Either way a call continues the trace of the
	// span in its context: the node's spans, down to the leader's write to
	// memcached, join the caller's trace.
	TracerProvider trace.TracerProvider
	// Propagator carries a call's trace context to the node; nil means
	// OpenTelemetry's global propagator, a no-op until the process sets one
	// (a node reads W3C Trace Context, propagation.TraceContext).
	Propagator propagation.TextMapPropagator
	// UnarySubmit makes every submission a Submit call of its own. By
	// default the Client's submissions share one SubmitStream: those made
	// at the same moment, by any of its callers, go in one message, which
	// costs the process and the node less CPU per submission. Against a
	// node without SubmitStream, the Client makes Submit calls either way.
	UnarySubmit bool
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	if c.Addr == "" && len(c.Addrs) == 0 {
		return config.Errorf("apiclient", "Addr", "is empty, and so is Addrs")
	}
	for i, a := range c.addrs() {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return config.Errorf("apiclient", "Addrs", "address %d %q is not host:port", i, a)
		}
	}
	return nil
}

// addrs is Addr followed by Addrs.
func (c *Config) addrs() []string {
	if c.Addr == "" {
		return c.Addrs
	}
	return append([]string{c.Addr}, c.Addrs...)
}

// statsHandler is the OpenTelemetry instrumentation of the client's
// calls. The keep-alive streams are left out: the Client's KeepAliveMany
// stream, and a Caller's KeepAlive stream against a node without it, live
// as long as the connection or the incarnation, in no caller's context,
// and would be traces of their own. So is the Client's SubmitStream, which
// carries the submissions of every caller and lives as long as its
// connection: a traced submission is a Submit call of its own
// (Caller.Submit).
func (c *Config) statsHandler() stats.Handler {
	untraced := map[string]bool{
		pb.Coordinator_KeepAlive_FullMethodName:     true,
		pb.Coordinator_KeepAliveMany_FullMethodName: true,
		pb.Coordinator_SubmitStream_FullMethodName:  true,
	}
	return otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(c.TracerProvider), otelgrpc.WithPropagators(c.Propagator),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return !untraced[info.FullMethodName] }))
}

// The connection's flow-control windows: static, which turns off gRPC's
// bandwidth-delay estimation. That estimation sends a ping after nearly
// every message received when messages are small and spaced out, as the
// API's are: a write and a read more on both sides for each answer. A
// stream may receive gRPC's largest message (4 MiB) without waiting for a
// window update.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// Client calls one node's API. It is safe for concurrent use.
type Client struct {
	conn  *grpc.ClientConn
	api   pb.CoordinatorClient
	unary bool
	sub   *streamer
	ka    *keepAlives
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
	// A resolver of the configured addresses: pick_first tries them in
	// order and moves on when the one in use fails.
	res := manual.NewBuilderWithScheme("coordinator")
	state := resolver.State{}
	for _, a := range cfg.addrs() {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	res.InitialState(state)
	conn, err := grpc.NewClient(res.Scheme()+":///nodes", grpc.WithTransportCredentials(cr), grpc.WithResolvers(res),
		grpc.WithStatsHandler(cfg.statsHandler()),
		grpc.WithStaticStreamWindowSize(streamWindow), grpc.WithStaticConnWindowSize(connWindow))
	if err != nil {
		return nil, fmt.Errorf("apiclient: %w", err)
	}
	c := &Client{conn: conn, api: pb.NewCoordinatorClient(conn), unary: cfg.UnarySubmit}
	c.sub, c.ka = newStreamer(c), newKeepAlives(c)
	return c, nil
}

// Close closes the connection; submissions waiting for their answer fail.
// It stops keeping its callers' leases alive, leaving each to its TTL:
// Close the callers first to free their names at once.
func (c *Client) Close() error {
	c.sub.close()
	c.ka.close()
	return c.conn.Close()
}

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
	// TTL is the lease TTL, within 1s..registry.MaxTTL and rounded up to
	// whole seconds; zero means registry.DefaultTTL.
	TTL time.Duration
	// IfAbsent refuses with ErrNameHeld rather than superseding a live
	// incarnation.
	IfAbsent bool
	// WaitDrained waits until the earlier incarnations' operations are
	// applied (G7).
	WaitDrained bool
}

// Validate checks the config; its errors are *config.FieldError. A TTL
// outside registry.TTLSeconds' rule also matches registry.ErrBadTTL.
func (c *RegisterConfig) Validate() error { return registry.ValidateTTL("apiclient", c.TTL) }

// Register registers name and keeps its lease alive, on the Client's
// keep-alive stream, until the Caller's Close, the incarnation's end or
// the Client's Close.
func (c *Client) Register(ctx context.Context, name string, cfg RegisterConfig) (*Caller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ttl := int64(0)
	if cfg.TTL != 0 {
		ttl, _ = registry.TTLSeconds(cfg.TTL)
	}
	r, err := c.api.Register(ctx, &pb.RegisterRequest{
		Name: name, TtlSeconds: int32(ttl), IfAbsent: cfg.IfAbsent, WaitDrained: cfg.WaitDrained,
	})
	if err != nil {
		return nil, wrap(err)
	}
	return newCaller(c, name, r), nil
}
