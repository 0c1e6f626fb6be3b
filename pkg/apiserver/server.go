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
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// shutdownTimeout bounds how long Serve waits for calls under way once its
// context ends, before it closes their connections.
const shutdownTimeout = 2 * time.Second

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
		sub, err = tokenseq.NewSubmitter(tokenseq.SubmitterConfig{Etcd: cfg.Etcd, Layout: layout, Limits: cfg.Limits})
		if err != nil {
			return nil, err
		}
	}
	insp, err := inspect.New(cfg.Etcd, cfg.Namespace)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, cli: cfg.Etcd, layout: layout,
		reg:      registry.New(cfg.Etcd, layout),
		sub:      sub,
		applied:  tokenseq.NewAppliedWatcher(cfg.Etcd, layout),
		insp:     insp,
		stopping: make(chan struct{}),
	}, nil
}

// Close ends the KeepAlive streams under way without revoking their leases
// (a node that stops leaves its callers' leases to them, to keep alive
// through another node) and makes new ones fail with UNAVAILABLE.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// RegisterGRPC registers the service on a gRPC server.
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
// the gateway. With Config.TLS it serves TLS (HTTP/2 negotiated by ALPN);
// without, plain TCP with HTTP/1.1 and HTTP/2 with prior knowledge (h2c),
// which gRPC clients speak. It returns nil once ctx ended and the server
// stopped.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer()
	s.RegisterGRPC(gs)
	gw := s.Handler()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		gw.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	if s.cfg.TLS != nil {
		hs.Protocols.SetHTTP2(true)
		hs.TLSConfig = s.cfg.TLS.Clone()
	} else {
		hs.Protocols.SetUnencryptedHTTP2(true)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		s.Close()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
		gs.Stop()
	}()
	var err error
	if s.cfg.TLS != nil {
		err = hs.ServeTLS(lis, "", "")
	} else {
		err = hs.Serve(lis)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		s.Close()
		hs.Close()
		gs.Stop()
	}
	<-done
	return err
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
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}
