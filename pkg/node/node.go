// Package node runs one coordinator node: it campaigns for leadership and,
// while it leads, runs the applier. A node that loses leadership stops
// writing at once and campaigns again; a node whose context ends resigns so
// a follower takes over without waiting for a lease to expire.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// DefaultMemcached is the memcached address used when none is given.
const DefaultMemcached = "127.0.0.1:11211"

// Config configures a node.
type Config struct {
	// Etcd is the etcd client.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout.
	Layout keyspace.Layout
	// NodeID names the node.
	NodeID string
	// LeaseTTL is the election lease TTL; zero means election.DefaultTTL.
	LeaseTTL time.Duration
	// Memcached lists memcached servers (host:port); keys are spread over
	// them by gomemcache's hashing. Empty means DefaultMemcached.
	Memcached []string
	// MemcachedTimeout bounds each exchange with memcached; zero means
	// memfence.DefaultTimeout (500ms).
	MemcachedTimeout time.Duration
	// WriteConcurrency is the most memcached writes the applier sends at
	// once (see applier.Config.WriteConcurrency); zero means
	// applier.DefaultWriteConcurrency.
	WriteConcurrency int
	// MaxInboxBatches bounds the batches the leader holds in memory (see
	// applier.Config.MaxInboxBatches); zero means the applier's default.
	MaxInboxBatches int
	// Limits validate records before they are applied.
	Limits ops.Limits
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Stats, when set, counts the applier's work.
	Stats *applier.Stats
	// Hooks observe the applier's writes (tests, tracing).
	Hooks applier.Hooks
}

// ErrBadConfig is returned by Run for an invalid Config.
var ErrBadConfig = errors.New("node: bad config")

// Run runs the node until ctx ends. It returns ErrBadConfig for an invalid
// cfg.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Etcd == nil {
		return fmt.Errorf("%w: Etcd is nil", ErrBadConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	servers := cfg.Memcached
	if len(servers) == 0 {
		servers = []string{DefaultMemcached}
	}
	mw, err := memfence.New(servers, memfence.Options{Timeout: cfg.MemcachedTimeout})
	if err != nil {
		return fmt.Errorf("%w: memcached servers: %w", ErrBadConfig, err)
	}
	defer mw.Close()
	acfg := applier.Config{
		Client: cfg.Etcd, Layout: cfg.Layout, Memcached: mw, Limits: cfg.Limits,
		WriteConcurrency: cfg.WriteConcurrency, MaxInboxBatches: cfg.MaxInboxBatches, Logger: cfg.Logger, Stats: cfg.Stats, Hooks: cfg.Hooks,
	}
	ecfg := election.Config{Client: cfg.Etcd, Layout: cfg.Layout, NodeID: cfg.NodeID, TTL: cfg.LeaseTTL, Logger: cfg.Logger}
	// While the node campaigns, a standby follows the pending batches, so
	// that it holds them when it wins (see applier.Standby).
	standby := applier.StartStandby(ctx, acfg)
	defer func() { standby.Stop() }()
	return election.Run(ctx, ecfg, func(l *election.Leadership) error {
		first := standby
		defer func() { standby = applier.StartStandby(ctx, acfg) }()
		return lead(l, acfg, first, cfg.Logger)
	})
}

// lead runs the applier for as long as the leadership lasts, starting from
// what the standby holds and restarting it after errors that do not end
// leadership (a broken watch, etcd hiccups).
func lead(l *election.Leadership, acfg applier.Config, standby *applier.Standby, log *slog.Logger) error {
	ctx := l.Context()
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		var err error
		if standby != nil {
			err = standby.Run(ctx, l)
			standby = nil
		} else {
			err = applier.Run(ctx, acfg, l)
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, election.ErrNotLeader) || errors.Is(err, memfence.ErrFenced) {
			return err
		}
		log.Warn("applier stopped; restarting", "err", err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return nil
		}
	}
}
