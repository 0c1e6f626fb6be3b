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
	"go.opentelemetry.io/otel/trace"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/monitor"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/readback"
	"github.com/coordinator-dev/coordinator/pkg/restore"
	"github.com/coordinator-dev/coordinator/pkg/topology"
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
	// Memcached lists memcached servers ("host:port", or "host:port=weight"
	// under ketama), in order; keys are spread over them by Distribution.
	// Empty means DefaultMemcached. They and Distribution must match the
	// namespace's topology in etcd (written by the first node on a
	// namespace without one) or the applied one (see topology.Applied), or
	// Run returns a *topology.MismatchError.
	Memcached []string
	// Distribution spreads keys over Memcached (see pkg/hashring); "" means
	// hashring.DefaultDistribution (modula, gomemcache's).
	Distribution hashring.Distribution
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
	// MemcachedStats, when set, counts what the leader notices of its
	// memcached servers (restarts; see memfence.Stats).
	MemcachedStats *memfence.Stats
	// RestartCheckInterval is how often the leader reads every memcached
	// server's stats to notice one that restarted (and lost its items);
	// zero means DefaultRestartCheckInterval.
	RestartCheckInterval time.Duration
	// RestoreOnRestart keeps the latest value, term and token of every key
	// the leader writes in etcd (see package restore), and writes a
	// restarted memcached server's keys back from them, between rounds.
	// Off, a restart is reported and its keys stay misses until written
	// again. A change of topology takes the keys to move from that record
	// when it is on, and from the servers' listings when it is off (see
	// topology.Migrate).
	RestoreOnRestart bool
	// MaxTerm is the highest term the node leads under; zero means
	// memfence.MaxTerm, the highest an item's flags hold. A node that wins
	// a later term refuses to lead and Run returns an error matching
	// memfence.ErrTermExhausted: every node stopped, topology.ResetTerm
	// (`coordinator topology reset-term`) starts the terms again. A lower
	// value keeps a margin below the layout's limit.
	MaxTerm uint64
	// ReadbackRate is the fraction of the leader's writes it reads back a
	// moment later, from the server a reader would use (see package
	// readback); zero turns the check off (serve's --readback-rate
	// defaults to readback.DefaultRate).
	ReadbackRate float64
	// ReadbackStats, when set, counts the read-backs; Run makes one when
	// it is nil and ReadbackRate is set.
	ReadbackStats *readback.Stats
	// Hooks observe the applier's writes (tests, tracing).
	Hooks applier.Hooks
	// TracerProvider, when set, traces the leader's apply of every batch
	// whose record carries a submission's trace context (see
	// applier.Config.TracerProvider); nil traces nothing.
	TracerProvider trace.TracerProvider
	// Election, when set, is kept up to date with the node's campaign
	// state, term and lease; Run makes one when it is nil.
	Election *election.Observer
	// Monitor, when set, serves the node's metrics, health and readiness
	// over HTTP while Run runs (see package monitor); its Gatherer and
	// Checks are the node's own (package metrics, package health) unless
	// set.
	Monitor *monitor.Config
	// Collectors are more metrics for the registry Monitor serves, such as
	// the caller API's (apiserver.Stats.Collectors).
	Collectors []prometheus.Collector
	// Health holds the thresholds of the checks Monitor serves
	// (MemcachedGrace, ProbeInterval, ProbeTimeout, EtcdWindow, whose zero
	// here means LeaseTTL); the node fills in the rest.
	Health health.Config
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
	case c.RestartCheckInterval < 0:
		return config.Errorf(pkg, "RestartCheckInterval", "%s is negative", c.RestartCheckInterval)
	case c.ReadbackRate < 0 || c.ReadbackRate > 1:
		return config.Errorf(pkg, "ReadbackRate", "%g is not a fraction in [0, 1]", c.ReadbackRate)
	case c.MaxTerm > memfence.MaxTerm:
		return config.Errorf(pkg, "MaxTerm", "%d is beyond %d, the highest term an item's flags hold", c.MaxTerm, memfence.MaxTerm)
	}
	if len(c.Memcached) > 0 {
		if _, err := c.localTopology(); err != nil {
			return err
		}
	} else if _, err := hashring.ParseDistribution(string(c.Distribution)); err != nil {
		return config.Errorf(pkg, "Distribution", "%w", err)
	}
	if err := c.validateObserving(); err != nil {
		return err
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
	if c.MaxTerm == 0 {
		c.MaxTerm = memfence.MaxTerm
	}
	return c
}

// election is the election's config.
func (c *Config) election() election.Config {
	return election.Config{Etcd: c.Etcd, Layout: c.Layout, NodeID: c.NodeID, LeaseTTL: c.LeaseTTL, Logger: c.Logger, Observer: c.Election}
}

// Run runs the node until ctx ends. It returns a *config.FieldError for an
// invalid cfg, and a *topology.MismatchError (matching
// topology.ErrMismatch) without leading when the node's memcached servers
// differ from both the namespace's topology and the applied one, at start
// or when it wins. It returns an error matching memfence.ErrTermExhausted
// without leading when it wins a term beyond Config.MaxTerm. A topology set
// while the node leads is taken between rounds (see topology.Migrate).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	cfg, stopObserving, err := startObserving(ctx, cfg)
	if err != nil {
		return err
	}
	defer stopObserving()
	local, err := cfg.localTopology()
	if err != nil {
		return err
	}
	if _, err := ensureTopology(ctx, cfg.Etcd, cfg.Layout, local, cfg.Logger); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// The selector is switched to a new topology at a round boundary, once
	// its keys are moved (see topoLeader).
	sel, err := newSwitchSelector(local)
	if err != nil {
		return err
	}
	mw, err := memfence.New(memfence.Config{Selector: sel, Timeout: cfg.MemcachedTimeout, Stats: cfg.MemcachedStats})
	if err != nil {
		return err
	}
	defer mw.Close()
	lc := &lifecycle{ctx: ctx, cfg: cfg, mw: mw}
	lc.acfg = applier.Config{
		Etcd: cfg.Etcd, Layout: cfg.Layout, Memcached: mw, Limits: cfg.Limits,
		WriteConcurrency: cfg.WriteConcurrency, MaxInboxBatches: cfg.MaxInboxBatches,
		Logger: cfg.Logger, Stats: cfg.Stats, Hooks: cfg.Hooks, TracerProvider: cfg.TracerProvider,
	}
	if cfg.ReadbackRate > 0 {
		// Off the write path: the hook queues a sample, this goroutine
		// reads it back.
		rb, err := readback.New(readback.Config{Reader: mw, Rate: cfg.ReadbackRate, Stats: cfg.ReadbackStats, Timeout: cfg.MemcachedTimeout,
			Logger: cfg.Logger})
		if err != nil {
			return err
		}
		lc.acfg.Hooks = joinHooks(lc.acfg.Hooks, applier.Hooks{AfterWrite: rb.Observe, Round: rb.RoundDone})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); rb.Run(rctx) }()
		defer func() { cancel(); <-done }()
	}
	if cfg.RestoreOnRestart {
		lc.acfg.BeforeCommit = func(ctx context.Context, ws []applier.Write) error {
			return restore.Keep(cfg.Etcd, cfg.Layout, lc.leading.Load())(ctx, ws)
		}
	}
	// The standby phase, until the node wins; lifecycle lists what is
	// started when it wins and stopped when it loses, in order.
	lc.startStandby()
	defer lc.stopStandby()
	// A topology that matches neither the node's servers nor the applied
	// one when the node wins ends Run: the node would otherwise win, refuse
	// and win again, keeping nodes that match from leading. A term beyond
	// MaxTerm ends it likewise. A change while it leads is taken between
	// rounds (see lifecycle.apply).
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	refuse := func(err error) {
		cfg.Logger.Error("refusing to lead", "err", err)
		stop(err)
	}
	lc.refuse = refuse
	lc.tl = &topoLeader{cfg: cfg, sel: sel, mw: mw, local: local, refuse: refuse}
	err = election.Run(runCtx, cfg.election(), lc.lead)
	if cause := context.Cause(runCtx); errors.Is(cause, topology.ErrMismatch) || errors.Is(cause, memfence.ErrTermExhausted) {
		return cause
	}
	return err
}
