package apiserver

import (
	"cmp"
	"crypto/tls"
	"log/slog"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	const pkg = "apiserver"
	switch {
	case c.Etcd == nil:
		return config.Errorf(pkg, "Etcd", "is nil")
	case c.MaxBodyBytes < 0:
		return config.Errorf(pkg, "MaxBodyBytes", "%d is negative", c.MaxBodyBytes)
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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
