// Package embedded runs a single-member etcd server inside the process, for
// development and tests; production deployments point coordinator nodes at
// an etcd cluster of their own.
package embedded

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

// Defaults of Config.
const (
	// DefaultClientAddr is where the embedded member listens for clients.
	DefaultClientAddr = "127.0.0.1:2379"
	// DefaultPeerAddr is where it listens for peers: a free port.
	DefaultPeerAddr = "127.0.0.1:0"
	// DefaultName is the member's name.
	DefaultName = "coordinator"
	// DefaultLogLevel is etcd's log level.
	DefaultLogLevel = "error"
	// DefaultMaxRequestBytes is etcd's request size limit: room for a
	// batch with a value of memcached's full item size.
	DefaultMaxRequestBytes = 4 << 20
	// DefaultStartTimeout bounds the wait for the member to be ready.
	DefaultStartTimeout = 60 * time.Second
)

// Config configures the embedded member. Zero values mean the defaults
// noted.
type Config struct {
	// Dir is the data directory, required; it is created if missing.
	Dir string
	// ClientAddr is host:port for clients; port 0 picks a free port. Empty
	// means DefaultClientAddr.
	ClientAddr string
	// PeerAddr is host:port for peers; port 0 picks a free port. Empty
	// means DefaultPeerAddr.
	PeerAddr string
	// Name is the member name; empty means DefaultName.
	Name string
	// LogLevel is etcd's log level; empty means DefaultLogLevel.
	LogLevel string
	// MaxRequestBytes is etcd's request size limit; zero means
	// DefaultMaxRequestBytes.
	MaxRequestBytes uint
	// StartTimeout bounds the wait for the member to be ready; zero means
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// HistoryRetention is how long the member keeps the history of changes
	// before compacting it away (etcd's periodic auto-compaction). Every
	// batch is a new key, deleted once applied, so without compaction the
	// member's key index and database grow for as long as it runs. Zero
	// keeps all history.
	HistoryRetention time.Duration
	// ClientTLS makes the member serve its clients over TLS (https://
	// endpoints). The zero value serves plain http.
	ClientTLS TLS
}

// TLS is the member's client TLS: its certificate and, for
// client-certificate authentication, the authority that signs its
// clients' certificates.
type TLS struct {
	// CertFile is the PEM file of the member's server certificate; it
	// needs KeyFile. Empty (with KeyFile empty) serves plain http.
	CertFile string
	// KeyFile is the PEM file of CertFile's private key.
	KeyFile string
	// TrustedCAFile is the PEM file of the authority that signs client
	// certificates; it needs ClientCertAuth.
	TrustedCAFile string
	// ClientCertAuth refuses clients without a certificate signed by
	// TrustedCAFile. With auth enabled, etcd takes the certificate's
	// common name as the user name.
	ClientCertAuth bool
}

// Enabled reports whether the member serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

func (t TLS) validate(pkg string) error {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return config.Errorf(pkg, "ClientTLS.KeyFile", "is required with CertFile")
	case t.KeyFile != "" && t.CertFile == "":
		return config.Errorf(pkg, "ClientTLS.CertFile", "is required with KeyFile")
	case t.ClientCertAuth && t.TrustedCAFile == "":
		return config.Errorf(pkg, "ClientTLS.TrustedCAFile", "is required with ClientCertAuth")
	case t.TrustedCAFile != "" && !t.ClientCertAuth:
		return config.Errorf(pkg, "ClientTLS.ClientCertAuth", "must be set with TrustedCAFile")
	case (t.TrustedCAFile != "" || t.ClientCertAuth) && t.CertFile == "":
		return config.Errorf(pkg, "ClientTLS.CertFile", "is required with client-certificate authentication")
	}
	for _, f := range []struct{ field, path string }{
		{"ClientTLS.CertFile", t.CertFile}, {"ClientTLS.KeyFile", t.KeyFile}, {"ClientTLS.TrustedCAFile", t.TrustedCAFile},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return config.Errorf(pkg, f.field, "cannot read %q: %w", f.path, err)
		}
		fh.Close()
	}
	return nil
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	const pkg = "embedded"
	if c.Dir == "" {
		return config.Errorf(pkg, "Dir", "is required")
	}
	for _, addr := range []struct{ field, value string }{{"ClientAddr", c.ClientAddr}, {"PeerAddr", c.PeerAddr}} {
		if addr.value == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr.value); err != nil {
			return config.Errorf(pkg, addr.field, "%w", err)
		}
	}
	switch {
	case c.StartTimeout < 0:
		return config.Errorf(pkg, "StartTimeout", "%s is negative", c.StartTimeout)
	case c.HistoryRetention < 0:
		return config.Errorf(pkg, "HistoryRetention", "%s is negative", c.HistoryRetention)
	}
	return c.ClientTLS.validate(pkg)
}

// withDefaults fills in the defaults of unset fields.
func (c Config) withDefaults() Config {
	c.ClientAddr = cmp.Or(c.ClientAddr, DefaultClientAddr)
	c.PeerAddr = cmp.Or(c.PeerAddr, DefaultPeerAddr)
	c.Name = cmp.Or(c.Name, DefaultName)
	c.LogLevel = cmp.Or(c.LogLevel, DefaultLogLevel)
	c.MaxRequestBytes = cmp.Or(c.MaxRequestBytes, DefaultMaxRequestBytes)
	c.StartTimeout = cmp.Or(c.StartTimeout, DefaultStartTimeout)
	return c
}

// ErrStartTimeout is returned when the member is not ready in time.
var ErrStartTimeout = errors.New("embedded: etcd did not become ready in time")

// Server is a running embedded member.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	closeOnce sync.Once
}

// Start starts the member and waits until it serves. It returns a
// *config.FieldError for an invalid cfg.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// A port 0 is resolved to a free port before etcd listens on it, since
	// etcd must advertise the address it listens on; another process can
	// take that port in between, so a start that finds it taken is tried
	// again with other free ports.
	var (
		e   *embed.Etcd
		cu  url.URL
		err error
	)
	for attempt := 1; ; attempt++ {
		e, cu, err = startEtcd(cfg)
		if err == nil {
			break
		}
		free := portZero(cfg.PeerAddr) || portZero(cfg.ClientAddr)
		if !free || !errors.Is(err, syscall.EADDRINUSE) || attempt == maxStartAttempts {
			return nil, err
		}
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded: etcd failed: %w", err)
	case <-timer.C:
		e.Close()
		return nil, ErrStartTimeout
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Server{etcd: e, endpoints: []string{cu.String()}}, nil
}

// maxStartAttempts bounds the starts tried when a free port was taken by
// another process before etcd could listen on it.
const maxStartAttempts = 5

// startEtcd starts etcd once, with port 0 resolved to free ports.
func startEtcd(cfg Config) (*embed.Etcd, url.URL, error) {
	peerAddr, err := resolvePort(cfg.PeerAddr)
	if err != nil {
		return nil, url.URL{}, fmt.Errorf("embedded: peer address: %w", err)
	}
	clientAddr, err := resolvePort(cfg.ClientAddr)
	if err != nil {
		return nil, url.URL{}, fmt.Errorf("embedded: client address: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.LogLevel = cfg.LogLevel
	ec.MaxRequestBytes = cfg.MaxRequestBytes
	if cfg.HistoryRetention > 0 {
		ec.AutoCompactionMode = embed.CompactorModePeriodic
		ec.AutoCompactionRetention = cfg.HistoryRetention.String()
	}
	cu := url.URL{Scheme: "http", Host: clientAddr}
	if cfg.ClientTLS.Enabled() {
		cu.Scheme = "https"
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile:       cfg.ClientTLS.CertFile,
			KeyFile:        cfg.ClientTLS.KeyFile,
			TrustedCAFile:  cfg.ClientTLS.TrustedCAFile,
			ClientCertAuth: cfg.ClientTLS.ClientCertAuth,
		}
	}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, cu, fmt.Errorf("embedded: start etcd: %w", err)
	}
	return e, cu, nil
}

// portZero reports whether addr asks for a free port.
func portZero(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

// Endpoints are the client URLs of the member: https:// ones when
// Config.ClientTLS is set.
func (s *Server) Endpoints() []string { return s.endpoints }

// Close stops the member cleanly. It is safe to call more than once.
func (s *Server) Close() { s.closeOnce.Do(s.etcd.Close) }

// resolvePort replaces port 0 with a free port, since etcd must advertise
// the address it listens on.
func resolvePort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
