// Package embedded runs a single-member etcd server inside the process, for
// development and tests. Production deployments point coordinator nodes at
// an existing etcd cluster instead.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// DefaultClientAddr is where the embedded member listens by default.
const DefaultClientAddr = "127.0.0.1:2379"

// Config configures the embedded member.
type Config struct {
	// Dir is the data directory; it is created if missing.
	Dir string
	// ClientAddr is host:port for clients; port 0 picks a free port.
	ClientAddr string
	// PeerAddr is host:port for peers; empty or port 0 picks a free port.
	PeerAddr string
	// Name is the member name; default "coordinator".
	Name string
	// LogLevel is etcd's log level; default "error".
	LogLevel string
	// MaxRequestBytes is etcd's request size limit; default 4 MiB, room for a
	// batch with a value of memcached's full item size.
	MaxRequestBytes uint
	// StartTimeout bounds the wait for the member to be ready; default 60s.
	StartTimeout time.Duration
	// HistoryRetention is how long the member keeps the history of changes
	// before compacting it away (etcd's periodic auto-compaction). Every
	// batch is a new key, deleted once applied, so without compaction the
	// member's key index and database grow for as long as it runs. Zero
	// keeps all history.
	HistoryRetention time.Duration
}

// ErrBadConfig is returned by Start for an invalid Config.
var ErrBadConfig = errors.New("embedded: bad config")

// ErrStartTimeout is returned when the member is not ready in time.
var ErrStartTimeout = errors.New("embedded: etcd did not become ready in time")

// Server is a running embedded member.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	closeOnce sync.Once
}

// Start starts the member and waits until it serves.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: Dir is required", ErrBadConfig)
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = DefaultClientAddr
	}
	if cfg.PeerAddr == "" {
		cfg.PeerAddr = "127.0.0.1:0"
	}
	if cfg.Name == "" {
		cfg.Name = "coordinator"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = 4 << 20
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	peerAddr, err := resolvePort(cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded: peer address: %w", err)
	}
	clientAddr, err := resolvePort(cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded: client address: %w", err)
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
	pu := url.URL{Scheme: "http", Host: peerAddr}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded: start etcd: %w", err)
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

// Endpoints are the client URLs of the member.
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
