// Package apiserver serves the coordinator's caller API
// (api/coordinator/v1) on a node: gRPC, and HTTP/JSON through grpc-gateway,
// both on one listener. Calls go to etcd the way pkg/client's do: names
// register under etcd leases (pkg/registry's record format), batches are
// stored by one tokenseq.Submitter shared by every caller of the node, so
// the submissions of many caller processes share etcd transactions (group
// commit), and G1's incarnation check stays in the accepting transaction.
package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/leasekeeper"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/regwatch"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
	"github.com/coordinator-dev/coordinator/pkg/tracing"
)

// OpenAPIPath is where Serve answers the HTTP/JSON API's OpenAPI document
// (coordinatorv1.OpenAPI).
const OpenAPIPath = "/openapi.json"

// shutdownTimeout bounds how long Serve waits for calls under way once its
// context ends, before it closes their connections.
const shutdownTimeout = 2 * time.Second

// handshakeTimeout bounds a new connection's TLS handshake and first
// request headers (gRPC: its HTTP/2 preface and settings).
const handshakeTimeout = 10 * time.Second

// maxHeaderBytes bounds a request's headers.
const maxHeaderBytes = 64 << 10

// pingTimeout is how long a connection's ping may go unanswered before the
// connection is closed.
const pingTimeout = 15 * time.Second

// Server implements coordinator.v1.Coordinator. It is safe for concurrent
// use.
type Server struct {
	pb.UnimplementedCoordinatorServer

	cfg     Config // with defaults
	cli     *clientv3.Client
	layout  keyspace.Layout
	reg     *registry.Registry
	sub     *tokenseq.Submitter
	applied *tokenseq.AppliedWatcher
	insp    *inspect.Inspector
	lim     *limiter
	// leases renews the leases of every KeepAlive stream, regs watches
	// their registrations: one etcd stream and one watch for all of them.
	leases *leasekeeper.Keeper
	regs   *regwatch.Watcher

	stopOnce sync.Once
	stopping chan struct{} // closed by Close
}

// New returns a Server; it returns a *config.FieldError for an invalid cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	layout := keyspace.MustNew(cfg.Namespace)
	sub := cfg.Submitter
	if sub == nil {
		var err error
		// Traced with the API's calls: a submission's span is a child of
		// its call's, and its record carries the trace to the leader.
		sub, err = tokenseq.NewSubmitter(tokenseq.SubmitterConfig{Etcd: cfg.Etcd, Layout: layout, Limits: cfg.Limits,
			TracerProvider: cfg.TracerProvider})
		if err != nil {
			return nil, err
		}
	}
	insp, err := inspect.New(cfg.Etcd, cfg.Namespace)
	if err != nil {
		return nil, err
	}
	leases, err := leasekeeper.New(leasekeeper.Config{Etcd: cfg.Etcd, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	regs, err := regwatch.New(regwatch.Config{Etcd: cfg.Etcd, Layout: layout, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, cli: cfg.Etcd, layout: layout, leases: leases, regs: regs,
		reg:      registry.New(cfg.Etcd, layout),
		sub:      sub,
		applied:  tokenseq.NewAppliedWatcher(cfg.Etcd, layout),
		insp:     insp,
		lim:      newLimiter(cfg, cfg.Stats),
		stopping: make(chan struct{}),
	}, nil
}

// Close ends the KeepAlive streams under way without revoking their leases
// (a node that stops leaves its callers' leases to them, to keep alive
// through another node) and makes new ones fail with UNAVAILABLE; it stops
// renewing their leases and watching their registrations.
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		close(s.stopping)
		s.leases.Close()
		s.regs.Close()
	})
}

// RegisterGRPC registers the service on a gRPC server; whoever serves it
// calls Close once it stops, as Serve does, which stops the renewals and
// the watch the KeepAlive streams share.
func (s *Server) RegisterGRPC(r grpc.ServiceRegistrar) {
	pb.RegisterCoordinatorServer(r, s)
}

// Handler returns the HTTP/JSON API (grpc-gateway, routes in
// api/coordinator/v1/coordinator_api.yaml). JSON field names are the
// proto's (snake_case); unknown fields are refused; a body over
// Config.MaxBodyBytes is refused with HTTP 413.
func (s *Server) Handler() http.Handler {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
		runtime.WithErrorHandler(httpError),
	)
	if err := pb.RegisterCoordinatorHandlerServer(context.Background(), mux, s); err != nil {
		// Registration fails only for a nil server or mux.
		panic(err)
	}
	limit := s.cfg.MaxBodyBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			writeTooLarge(w, limit)
			return
		}
		body := &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, limit), limit: limit}
		r.Body = body
		ctx := withCallerInfo(r.Context(), callerInfo{tls: r.TLS, addr: r.RemoteAddr, body: body})
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Serve serves gRPC and HTTP/JSON on lis until ctx ends: requests with
// HTTP/2 and a content type of application/grpc go to gRPC, the rest to
// the gateway. Beside the caller API, the gRPC server answers
// grpc.health.v1.Health (Config.Health) and server reflection (for
// grpcurl and the like), and GET /openapi.json answers the API's OpenAPI
// document. With Config.TLS it serves TLS (HTTP/2 negotiated by ALPN);
// without, plain TCP with HTTP/1.1 and HTTP/2 with prior knowledge (h2c),
// which gRPC clients speak. It returns nil once ctx ended and the server
// stopped.
//
// gRPC served this way goes through net/http's HTTP/2 server, which costs
// a stream two goroutines and a response buffer more than gRPC's own
// transport: a node holding thousands of KeepAlive streams serves gRPC
// with ServeGRPC on a listener of its own, and HTTP/JSON with ServeJSON on
// another, as etcd splits its client URLs.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs, hs := s.grpcServer()
	return s.serveHTTP(ctx, lis, gs, hs)
}

// ServeJSON serves the HTTP/JSON API and the OpenAPI document alone on lis
// until ctx ends, as Serve does; a gRPC call there is answered
// UNIMPLEMENTED, naming the gRPC listener as the place to call.
func (s *Server) ServeJSON(ctx context.Context, lis net.Listener) error {
	hs := s.cfg.Health
	if hs == nil {
		hs = grpchealth.NewServer()
	}
	return s.serveHTTP(ctx, lis, nil, hs)
}

// grpcServer is the API's gRPC server with the health and reflection
// services, and the health server it registered (Config.Health, or a
// private one whose services are SERVING).
func (s *Server) grpcServer(extra ...grpc.ServerOption) (*grpc.Server, *grpchealth.Server) {
	opts := s.cfg.Metrics.grpcOptions()
	if tp := s.cfg.TracerProvider; tp != nil {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(tracing.Propagator()))))
	}
	gs := grpc.NewServer(append(opts, extra...)...)
	s.RegisterGRPC(gs)
	hs := s.cfg.Health
	if hs == nil {
		hs = grpchealth.NewServer()
		hs.SetServingStatus(pb.Coordinator_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	s.cfg.Metrics.initialize(gs)
	return gs, hs
}

// serveHTTP serves HTTP/JSON on lis through net/http, and gRPC too unless
// gs is nil.
func (s *Server) serveHTTP(ctx context.Context, lis net.Listener, gs *grpc.Server, hs *grpchealth.Server) error {
	api := s.Handler()
	gw := s.cfg.Metrics.instrument(traceHTTP(s.cfg.TracerProvider, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == OpenAPIPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(pb.OpenAPI)
			return
		}
		api.ServeHTTP(w, r)
	})))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if born, ok := r.Context().Value(connBornKey{}).(time.Time); ok && time.Since(born) > s.cfg.MaxConnectionAge {
			// An old connection is closed once this answer is sent: HTTP/1
			// by the header itself, HTTP/2 (gRPC) by net/http's GOAWAY,
			// which lets the calls under way finish. Clients reconnect,
			// to this node or through a balancer to another.
			w.Header().Set("Connection", "close")
		}
		if stream, long := longCalls[r.URL.Path]; long {
			// Bounded by their own deadline, not by the timeouts of
			// ordinary calls: a wait by MaxWait, a keep-alive stream by
			// its lease (it ends when the registration does) and the
			// connection's pings.
			until := time.Now().Add(s.cfg.MaxWait + s.cfg.WriteTimeout)
			if stream {
				until = time.Time{}
			}
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(until)
			_ = rc.SetWriteDeadline(until)
		}
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			if gs == nil {
				grpcElsewhere(w)
				return
			}
			gs.ServeHTTP(w, r)
			return
		}
		gw.ServeHTTP(w, r)
	})
	srv := &http.Server{
		Handler: h,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connBornKey{}, s.connBorn())
		},
		ReadHeaderTimeout: handshakeTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: s.cfg.MaxStreamsPerConn,
			// A peer that stops answering pings (gone without a FIN: a
			// cut, a dead host) is closed rather than held.
			SendPingTimeout: s.cfg.IdleTimeout / 4,
			PingTimeout:     pingTimeout,
		},
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	if s.cfg.TLS != nil {
		srv.Protocols.SetHTTP2(true)
		srv.TLSConfig = s.cfg.TLS.Clone()
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	serve := func() error { return srv.Serve(lis) }
	if s.cfg.TLS != nil {
		serve = func() error { return srv.ServeTLS(lis, "", "") }
	}
	return s.serveUntil(ctx, hs, serve, http.ErrServerClosed, func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		if gs != nil {
			gs.Stop()
		}
	})
}

// serveUntil runs serve until ctx ends or serve fails, then stops: health
// watchers (load balancers) learn of the stop first, Close ends the
// streams, and stop ends the serving, gracefully within shutdownTimeout.
// It returns serve's error, nil for closed, serve's error once stopped.
func (s *Server) serveUntil(ctx context.Context, hs *grpchealth.Server, serve func() error, closed error, stop func()) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		hs.Shutdown()
		s.Close()
		stop()
	}()
	err := serve()
	if errors.Is(err, closed) {
		err = nil
	}
	cancel()
	<-done
	return err
}

// grpcElsewhere answers a gRPC call made to a listener of HTTP/JSON alone
// (ServeJSON), trailers-only, as gRPC answers a method it lacks.
func grpcElsewhere(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Grpc-Status", strconv.Itoa(int(codes.Unimplemented)))
	w.Header().Set("Grpc-Message", "this address serves the HTTP/JSON API only; call gRPC on the node's gRPC address")
	w.WriteHeader(http.StatusOK)
}

// connBorn is when a connection accepted now counts as born: now, less a
// jitter of up to a tenth of Config.MaxConnectionAge, so that the
// connections of one start do not all close at once.
func (s *Server) connBorn() time.Time {
	jitter := time.Duration(rand.Int64N(int64(s.cfg.MaxConnectionAge)/10 + 1))
	return time.Now().Add(-jitter)
}

// traceHTTP starts a server span per HTTP/JSON request, a child of the
// caller's trace context (traceparent), named after the route; h itself
// for a nil tp. The calls the gateway makes in-process run under it.
func traceHTTP(tp trace.TracerProvider, h http.Handler) http.Handler {
	if tp == nil {
		return h
	}
	tracer, prop := tp.Tracer("github.com/coordinator-dev/coordinator/pkg/apiserver"), tracing.Propagator()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := r.URL.Path
		if !httpRoutes()[route] {
			route = "other"
		}
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", route)))
		defer span.End()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", rec.code))
		if rec.code >= 500 {
			span.SetStatus(otelcodes.Error, http.StatusText(rec.code))
		}
	})
}

// connBornKey is the context key of when a connection was accepted.
type connBornKey struct{}

// longCalls are the paths of calls that may outlast Config.WriteTimeout
// by design, true for a stream: the keep-alive stream, the submit stream
// (whose submissions are bounded one by one), and waits for a token.
var longCalls = map[string]bool{
	"/coordinator.v1.Coordinator/KeepAlive":     true,
	"/coordinator.v1.Coordinator/KeepAliveMany": true,
	"/coordinator.v1.Coordinator/SubmitStream":  true,
	"/coordinator.v1.Coordinator/WaitApplied":   false,
	"/v1/wait-applied":                          false,
}

// callerInfo is what the HTTP layer knows of a caller, carried to the calls
// the gateway makes in-process.
type callerInfo struct {
	tls  *tls.ConnectionState
	addr string
	body *limitedBody
}

type callerInfoKey struct{}

func withCallerInfo(ctx context.Context, ci callerInfo) context.Context {
	return context.WithValue(ctx, callerInfoKey{}, ci)
}

func callerInfoFrom(ctx context.Context) (callerInfo, bool) {
	ci, ok := ctx.Value(callerInfoKey{}).(callerInfo)
	return ci, ok
}

// limitedBody is a request body under http.MaxBytesReader that remembers
// whether the limit was hit: the gateway turns read errors into a plain
// InvalidArgument status, and the error handler must still answer 413.
type limitedBody struct {
	io.ReadCloser
	limit int64
	hit   atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		b.hit.Store(true)
	}
	return n, err
}

func (b *limitedBody) tooLarge() bool { return b.hit.Load() }

// writeTooLarge answers a body over limit.
func writeTooLarge(w http.ResponseWriter, limit int64) {
	err := apierr.New(apierr.ReasonTooLarge,
		"request body is over "+strconv.FormatInt(limit, 10)+" bytes", nil)
	buf, _ := (&runtime.JSONPb{MarshalOptions: protojson.MarshalOptions{UseProtoNames: true}}).Marshal(status.Convert(err).Proto())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = w.Write(buf)
}

// httpError is the gateway's error handler: runtime.DefaultHTTPErrorHandler,
// with HTTP 413 for a body over the limit, and an INVALID reason on the
// gateway's own InvalidArgument errors (malformed JSON, wrong types,
// unknown fields), so that every refusal carries a reason.
func httpError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if ci, ok := callerInfoFrom(r.Context()); ok && ci.body != nil && ci.body.tooLarge() {
		writeTooLarge(w, ci.body.limit)
		return
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument && apierr.ReasonOf(err) == "" {
		err = apierr.New(apierr.ReasonInvalid, st.Message(), nil)
	}
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				secs := int64(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))
				w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
			}
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}
