package apiserver

import (
	"cmp"
	"crypto/tls"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	grpchealth "google.golang.org/grpc/health"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// DefaultMaxBodyBytes bounds an HTTP/JSON request body when
// Config.MaxBodyBytes is zero: room for the largest batch etcd takes
// (ops.DefaultMaxBatchBytes) in base64 with its JSON around it.
const DefaultMaxBodyBytes = 2 << 20

// Config configures a Server. Zero values mean the defaults noted.
type Config struct {
	// Etcd is the etcd client every call goes through.
	Etcd *clientv3.Client
	// Namespace; empty means keyspace.DefaultNamespace.
	Namespace string
	// Limits validate every batch; zero means memcached's defaults.
	Limits ops.Limits
	// Submitter stores the batches; nil means New makes one, shared by every
	// caller of the server, so that their submissions share etcd
	// transactions. A given Submitter must use Etcd and Namespace.
	Submitter *tokenseq.Submitter
	// TLS, when set, is the listener's TLS configuration for Serve (with
	// ClientAuth and ClientCAs for mTLS); nil serves plain TCP.
	TLS *tls.Config
	// AuthorizeNames, when set, lets a call act only as the names its
	// verified client certificate allows (see CertNames); a call without
	// one is refused with PERMISSION_DENIED. It needs TLS with client
	// certificates. When unset, anyone who reaches the listener can act as
	// any name.
	AuthorizeNames bool
	// MaxBodyBytes bounds an HTTP/JSON request body; larger ones are
	// refused with TOO_LARGE (HTTP 413). Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxRegistrations bounds the live registrations made (or kept alive)
	// through the node; a registration over it is RESOURCE_EXHAUSTED.
	// Zero means DefaultMaxRegistrations.
	MaxRegistrations int
	// MaxConcurrentCalls bounds the calls served at once, KeepAlive
	// streams not counted; each submission of a SubmitStream counts as a
	// call while it is under way. Zero means DefaultMaxConcurrentCalls.
	MaxConcurrentCalls int
	// MaxStreams bounds the KeepAlive and SubmitStream streams held open.
	// Zero means DefaultMaxStreams.
	MaxStreams int
	// RegisterRate and RegisterBurst bound the registrations per second of
	// one caller identity (its client certificate's subject, or its
	// address without mTLS). Zero means DefaultRegisterRate and
	// DefaultRegisterBurst.
	RegisterRate  float64
	RegisterBurst int
	// CallRate and CallBurst bound the calls per second of one caller
	// identity. Zero means DefaultCallRate and DefaultCallBurst.
	CallRate  float64
	CallBurst int
	// ReadTimeout bounds reading a request, its body included; zero means
	// DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout bounds a call from its request's headers to the end of
	// its answer; KeepAlive streams and WaitApplied are bounded by their
	// own deadline instead (MaxWait). Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection that has carried no request for that
	// long; zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxWait bounds a WaitApplied call; zero means DefaultMaxWait.
	MaxWait time.Duration
	// MaxConnectionAge closes a connection gracefully (HTTP/2: GOAWAY,
	// the calls under way finish) with its first answer after it is this
	// old, so that callers spread again over the nodes a balancer adds;
	// zero means DefaultMaxConnectionAge.
	MaxConnectionAge time.Duration
	// MaxStreamsPerConn bounds the HTTP/2 streams (gRPC calls) one
	// connection carries at once; zero means DefaultMaxStreamsPerConn.
	MaxStreamsPerConn int
	// Health, when set, is the grpc.health.v1 server Serve registers on
	// its gRPC server; its owner sets its statuses (a node's health
	// checker: see package health), and Serve sets them all NOT_SERVING
	// when it stops. Nil registers a private one whose empty service name
	// and coordinator.v1.Coordinator are SERVING while Serve serves.
	Health *grpchealth.Server
	// TracerProvider, when set, traces the calls served: gRPC calls with
	// otelgrpc, HTTP/JSON requests with a server span per request, both
	// continuing the caller's W3C trace context (package tracing), and,
	// unless Submitter is set, the submissions and group transactions
	// inside them (tokenseq.SubmitterConfig.TracerProvider), whose records
	// then carry sampled trace contexts to the leader. Nil traces nothing.
	TracerProvider trace.TracerProvider
	// Metrics, when set, count and time the calls served, gRPC per
	// method and HTTP/JSON per route (NewMetrics); nil measures nothing.
	Metrics *Metrics
	// Stats, when set, counts what the limits refused; nil keeps a private
	// one.
	Stats *Stats
	// Logger; nil means slog.Default(). Registrations, takeovers,
	// unregistrations and permission refusals are logged at INFO with the
	// attribute audit=true, the caller's identity and address.
	Logger *slog.Logger
}

// Defaults of the connection timeouts of Config.
const (
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxWait           = 10 * time.Minute
	DefaultMaxConnectionAge  = 30 * time.Minute
	DefaultMaxStreamsPerConn = 1000
)

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	const pkg = "apiserver"
	switch {
	case c.Etcd == nil:
		return config.Errorf(pkg, "Etcd", "is nil")
	case c.MaxBodyBytes < 0:
		return config.Errorf(pkg, "MaxBodyBytes", "%d is negative", c.MaxBodyBytes)
	case c.MaxRegistrations < 0:
		return config.Errorf(pkg, "MaxRegistrations", "%d is negative", c.MaxRegistrations)
	case c.MaxConcurrentCalls < 0:
		return config.Errorf(pkg, "MaxConcurrentCalls", "%d is negative", c.MaxConcurrentCalls)
	case c.MaxStreams < 0:
		return config.Errorf(pkg, "MaxStreams", "%d is negative", c.MaxStreams)
	case c.RegisterRate < 0:
		return config.Errorf(pkg, "RegisterRate", "%v is negative", c.RegisterRate)
	case c.RegisterBurst < 0:
		return config.Errorf(pkg, "RegisterBurst", "%d is negative", c.RegisterBurst)
	case c.CallRate < 0:
		return config.Errorf(pkg, "CallRate", "%v is negative", c.CallRate)
	case c.CallBurst < 0:
		return config.Errorf(pkg, "CallBurst", "%d is negative", c.CallBurst)
	case c.ReadTimeout < 0:
		return config.Errorf(pkg, "ReadTimeout", "%v is negative", c.ReadTimeout)
	case c.WriteTimeout < 0:
		return config.Errorf(pkg, "WriteTimeout", "%v is negative", c.WriteTimeout)
	case c.IdleTimeout < 0:
		return config.Errorf(pkg, "IdleTimeout", "%v is negative", c.IdleTimeout)
	case c.MaxWait < 0:
		return config.Errorf(pkg, "MaxWait", "%v is negative", c.MaxWait)
	case c.MaxConnectionAge < 0:
		return config.Errorf(pkg, "MaxConnectionAge", "%v is negative", c.MaxConnectionAge)
	case c.MaxStreamsPerConn < 0:
		return config.Errorf(pkg, "MaxStreamsPerConn", "%d is negative", c.MaxStreamsPerConn)
	case c.AuthorizeNames && (c.TLS == nil || c.TLS.ClientAuth < tls.VerifyClientCertIfGiven):
		return config.Errorf(pkg, "AuthorizeNames", "needs TLS that verifies client certificates")
	}
	if c.Namespace != "" {
		if _, err := keyspace.New(c.Namespace); err != nil {
			return config.Errorf(pkg, "Namespace", "%w", err)
		}
	}
	return nil
}

// withDefaults fills in the defaults of unset fields.
func (c Config) withDefaults() Config {
	c.Namespace = cmp.Or(c.Namespace, keyspace.DefaultNamespace)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.MaxRegistrations = cmp.Or(c.MaxRegistrations, DefaultMaxRegistrations)
	c.MaxConcurrentCalls = cmp.Or(c.MaxConcurrentCalls, DefaultMaxConcurrentCalls)
	c.MaxStreams = cmp.Or(c.MaxStreams, DefaultMaxStreams)
	c.RegisterRate = cmp.Or(c.RegisterRate, DefaultRegisterRate)
	c.RegisterBurst = cmp.Or(c.RegisterBurst, DefaultRegisterBurst)
	c.CallRate = cmp.Or(c.CallRate, DefaultCallRate)
	c.CallBurst = cmp.Or(c.CallBurst, DefaultCallBurst)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, DefaultReadTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.MaxWait = cmp.Or(c.MaxWait, DefaultMaxWait)
	c.MaxConnectionAge = cmp.Or(c.MaxConnectionAge, DefaultMaxConnectionAge)
	c.MaxStreamsPerConn = cmp.Or(c.MaxStreamsPerConn, DefaultMaxStreamsPerConn)
	if c.Stats == nil {
		c.Stats = new(Stats)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
