// Package node runs one coordinator node: it campaigns for leadership and,
// while it leads, runs the applier. A node that loses leadership stops
// writing at once and campaigns again; a node whose context ends resigns so
// a follower takes over without waiting for a lease to expire.
package node

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// DefaultMemcached is the memcached address used when none is given.
const DefaultMemcached = "127.0.0.1:11211"

// Config configures a node. Zero values mean the defaults noted.
type Config struct {
	// Etcd is the etcd client.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout.
	Layout keyspace.Layout
	// NodeID names the node.
	NodeID string
	// LeaseTTL is the election lease TTL (see election.Config.LeaseTTL);
	// zero means election.DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Memcached lists memcached servers (host:port); keys are spread over
	// them by gomemcache's hashing. Empty means DefaultMemcached.
	Memcached []string
	// MemcachedTimeout bounds each exchange with memcached; zero means
	// memfence.DefaultTimeout.
	MemcachedTimeout time.Duration
	// WriteConcurrency is the most memcached writes the applier sends at
	// once (see applier.Config.WriteConcurrency); zero means
	// applier.DefaultWriteConcurrency.
	WriteConcurrency int
	// MaxInboxBatches bounds the batches the leader holds in memory (see
	// applier.Config.MaxInboxBatches); zero means
	// applier.DefaultMaxInboxBatches.
	MaxInboxBatches int
	// Limits validate records before they are applied; zero means
	// memcached's defaults.
	Limits ops.Limits
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Stats, when set, counts the applier's work.
	Stats *applier.Stats
	// Hooks observe the applier's writes (tests, tracing).
	Hooks applier.Hooks
}

// Validate checks the config; its errors are *config.FieldError. The
// election's rules (Layout, NodeID, LeaseTTL) are election.Config's, and
// reported as the election's; a memcached address that does not resolve is
// reported by Run.
func (c *Config) Validate() error {
	const pkg = "node"
	switch {
	case c.Etcd == nil:
		return config.Errorf(pkg, "Etcd", "is nil")
	case slices.Contains(c.Memcached, ""):
		return config.Errorf(pkg, "Memcached", "%q holds an empty address", c.Memcached)
	case c.MemcachedTimeout < 0:
		return config.Errorf(pkg, "MemcachedTimeout", "%s is negative", c.MemcachedTimeout)
	case c.WriteConcurrency < 0:
		return config.Errorf(pkg, "WriteConcurrency", "%d is negative", c.WriteConcurrency)
	case c.MaxInboxBatches < 0:
		return config.Errorf(pkg, "MaxInboxBatches", "%d is negative", c.MaxInboxBatches)
	}
	ecfg := c.election()
	return ecfg.Validate()
}

// withDefaults fills in the defaults of unset fields that are the node's
// own; the election's and the applier's fill in theirs.
func (c Config) withDefaults() Config {
	if len(c.Memcached) == 0 {
		c.Memcached = []string{DefaultMemcached}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// election is the election's config.
func (c *Config) election() election.Config {
	return election.Config{Etcd: c.Etcd, Layout: c.Layout, NodeID: c.NodeID, LeaseTTL: c.LeaseTTL, Logger: c.Logger}
}

// Run runs the node until ctx ends. It returns a *config.FieldError for an
// invalid cfg.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	mw, err := memfence.New(memfence.Config{Servers: cfg.Memcached, Timeout: cfg.MemcachedTimeout})
	if err != nil {
		return err
	}
	defer mw.Close()
	acfg := applier.Config{
		Etcd: cfg.Etcd, Layout: cfg.Layout, Memcached: mw, Limits: cfg.Limits,
		WriteConcurrency: cfg.WriteConcurrency, MaxInboxBatches: cfg.MaxInboxBatches,
		Logger: cfg.Logger, Stats: cfg.Stats, Hooks: cfg.Hooks,
	}
	// While the node campaigns, a standby follows the pending batches, so
	// that it holds them when it wins (see applier.Standby).
	standby := applier.StartStandby(ctx, acfg)
	defer func() { standby.Stop() }()
	return election.Run(ctx, cfg.election(), func(l *election.Leadership) error {
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
