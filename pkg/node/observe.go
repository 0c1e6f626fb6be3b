package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/metrics"
	"github.com/coordinator-dev/coordinator/pkg/monitor"
	"github.com/coordinator-dev/coordinator/pkg/readback"
)

// validateObserving checks Monitor and Health.
func (c *Config) validateObserving() error {
	if c.Monitor == nil && c.Health.GRPC == nil {
		return nil
	}
	if c.Monitor != nil {
		mcfg := *c.Monitor
		if err := mcfg.Validate(); err != nil {
			return err
		}
	}
	// The checker's own state comes from the node; its thresholds are
	// checked here.
	hcfg := c.Health
	hcfg.Election, hcfg.Stats, hcfg.Memcached = &election.Observer{}, &applier.Stats{}, []string{DefaultMemcached}
	return hcfg.Validate()
}

// startObserving fills in cfg's Stats and Election and, with a Monitor,
// starts its health checker and HTTP server, adding the metrics' hooks to
// cfg's; with Health.GRPC and no Monitor, it starts the health checker
// alone, to set the gRPC statuses. stop stops what it started and waits
// for it.
func startObserving(ctx context.Context, cfg Config) (_ Config, stop func(), _ error) {
	if cfg.Stats == nil {
		cfg.Stats = &applier.Stats{}
	}
	if cfg.Election == nil {
		cfg.Election = &election.Observer{}
	}
	if cfg.ReadbackRate > 0 && cfg.ReadbackStats == nil {
		cfg.ReadbackStats = &readback.Stats{}
	}
	if cfg.MemcachedStats == nil {
		cfg.MemcachedStats = &memfence.Stats{}
	}
	if cfg.Monitor == nil && cfg.Health.GRPC == nil {
		return cfg, func() {}, nil
	}
	hcfg := cfg.Health
	hcfg.Election, hcfg.Stats, hcfg.Memcached = cfg.Election, cfg.Stats, memcachedAddrs(cfg.Memcached)
	if hcfg.Etcd == nil {
		hcfg.Etcd = cfg.Etcd
	}
	if hcfg.EtcdWindow == 0 {
		hcfg.EtcdWindow = cfg.LeaseTTL
	}
	checker, err := health.New(hcfg)
	if err != nil {
		return cfg, nil, err
	}
	if cfg.Monitor == nil {
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); checker.Run(mctx) }()
		return cfg, func() { cancel(); <-done }, nil
	}
	m, err := metrics.New(metrics.Config{NodeID: cfg.NodeID, Election: cfg.Election, Stats: cfg.Stats, Health: checker,
		Memcached: cfg.MemcachedStats, MemcachedServers: hcfg.Memcached, Readback: cfg.ReadbackStats})
	if err != nil {
		return cfg, nil, err
	}
	for _, c := range cfg.Collectors {
		if err := m.Registry().Register(c); err != nil {
			return cfg, nil, fmt.Errorf("node: metrics: %w", err)
		}
	}
	cfg.Hooks = joinHooks(cfg.Hooks, m.Hooks())
	mcfg := *cfg.Monitor
	if mcfg.Gatherer == nil {
		mcfg.Gatherer = m.Registry()
	}
	if mcfg.Checks == nil {
		mcfg.Checks = checker
	}
	if mcfg.Logger == nil {
		mcfg.Logger = cfg.Logger
	}
	srv, err := monitor.Listen(mcfg)
	if err != nil {
		return cfg, nil, err
	}
	cfg.Logger.Info("monitor listening", "addr", srv.Addr().String(), "pprof", mcfg.EnablePprof)
	mctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { checker.Run(mctx) })
	wg.Go(func() {
		if err := srv.Serve(mctx); err != nil {
			cfg.Logger.Error("monitor stopped", "err", err)
		}
	})
	return cfg, func() { cancel(); wg.Wait() }, nil
}

// memcachedAddrs returns the addresses of servers ("host:port" or
// "host:port=weight"), as Validate accepted them.
func memcachedAddrs(servers []string) []string {
	addrs := make([]string, 0, len(servers))
	for _, s := range servers {
		if srv, err := hashring.ParseServer(s); err == nil {
			addrs = append(addrs, srv.Addr)
		}
	}
	return addrs
}

// joinHooks returns hooks that call a's and then b's.
func joinHooks(a, b applier.Hooks) applier.Hooks {
	return applier.Hooks{
		BeforeWrite: both2(a.BeforeWrite, b.BeforeWrite),
		AfterWrite:  both1(a.AfterWrite, b.AfterWrite),
		WatchResponse: func(events, held int, err error) {
			if a.WatchResponse != nil {
				a.WatchResponse(events, held, err)
			}
			if b.WatchResponse != nil {
				b.WatchResponse(events, held, err)
			}
		},
		Round:          both2(a.Round, b.Round),
		Commit:         both2(a.Commit, b.Commit),
		MemcachedError: both1(a.MemcachedError, b.MemcachedError),
	}
}

func both1[T any](f, g func(T)) func(T) {
	switch {
	case f == nil:
		return g
	case g == nil:
		return f
	}
	return func(x T) { f(x); g(x) }
}

func both2[T, U any](f, g func(T, U)) func(T, U) {
	switch {
	case f == nil:
		return g
	case g == nil:
		return f
	}
	return func(x T, y U) { f(x, y); g(x, y) }
}
