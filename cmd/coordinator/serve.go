package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

type serveOptions struct {
	dataDir      string
	embedListen  string
	embedHistory time.Duration
	memcached    string
	nodeID       string
	leaseTTL     time.Duration
	maxItemBytes int
	writers      int
	logLevel     string
}

func newServeCommand(g *globalOptions) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a coordinator node",
		Long: `Run a coordinator node. Every node campaigns for leadership; the leader applies
pending operations to memcached, the others stand by.

With no --endpoints, serve starts an embedded single-member etcd in --data-dir
listening on --embed-listen, for development and tests. In production, point
several nodes at an existing etcd cluster with --endpoints.

SIGINT or SIGTERM stop the node gracefully: it resigns leadership at once, so a
follower takes over without waiting for the lease to expire.`,
		Example: `  # development: embedded etcd, local memcached
  coordinator serve

  # production: three of these, one per machine
  coordinator serve --endpoints https://etcd-1:2379,https://etcd-2:2379,https://etcd-3:2379 \
      --memcached mc-1:11211,mc-2:11211 --node-id $(hostname)`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "coordinator.etcd", "embedded etcd's data directory (only without --endpoints)")
	f.StringVar(&o.embedListen, "embed-listen", embedded.DefaultClientAddr,
		"embedded etcd's client address (only without --endpoints)")
	f.DurationVar(&o.embedHistory, "embed-history-retention", time.Hour,
		"how long embedded etcd keeps its history before compacting it, 0 for ever "+
			"(only without --endpoints); a leader taking over after a longer outage "+
			"reads pending batches all at once")
	f.StringVar(&o.memcached, "memcached", node.DefaultMemcached, "memcached servers, host:port, comma separated")
	f.StringVar(&o.nodeID, "node-id", defaultNodeID(), "this node's name in the election")
	f.DurationVar(&o.leaseTTL, "lease-ttl", 5*time.Second,
		"leadership lease TTL: a dead leader is replaced within about this long")
	f.IntVar(&o.maxItemBytes, "max-item-bytes", ops.DefaultMaxItemBytes,
		"memcached's item size limit (its -I); larger items are refused")
	f.IntVar(&o.writers, "write-concurrency", applier.DefaultWriteConcurrency,
		"memcached writes the leader sends at once, in one pipeline per server, "+
			"at most one per registration name; each name's writes stay in token order, "+
			"1 keeps token order across names too")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func defaultNodeID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func (o *serveOptions) validate() error {
	if err := keyspace.ValidateName(o.nodeID); err != nil {
		return usagef("--node-id: %w", err)
	}
	if o.leaseTTL < 2*time.Second || o.leaseTTL%time.Second != 0 {
		return usagef("--lease-ttl must be whole seconds, at least 2s (got %s)", o.leaseTTL)
	}
	if o.maxItemBytes < 1024 {
		return usagef("--max-item-bytes must be at least 1024")
	}
	if o.writers < 1 {
		return usagef("--write-concurrency must be at least 1 (got %d)", o.writers)
	}
	if o.embedHistory < 0 {
		return usagef("--embed-history-retention must not be negative (got %s)", o.embedHistory)
	}
	if len(splitList(o.memcached)) == 0 {
		return usagef("--memcached is empty")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usagef("--log-level: %w", err)
	}
	return nil
}

func runServe(cmd *cobra.Command, g *globalOptions, o *serveOptions) error {
	if err := g.validate(); err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.logLevel))
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
	ctx := cmd.Context()

	if !cmd.Flags().Changed("endpoints") && !cmd.Root().PersistentFlags().Changed("endpoints") {
		dir, err := filepath.Abs(o.dataDir)
		if err != nil {
			return err
		}
		// etcd logs its own shutdown at error level; show its logs only when
		// debugging.
		etcdLog := "fatal"
		if lvl <= slog.LevelDebug {
			etcdLog = "warn"
		}
		srv, err := embedded.Start(ctx, embedded.Config{
			Dir: dir, ClientAddr: o.embedListen, LogLevel: etcdLog, HistoryRetention: o.embedHistory,
		})
		if err != nil {
			return err
		}
		defer srv.Close()
		g.endpoints = strings.Join(srv.Endpoints(), ",")
		log.Info("embedded etcd listening", "endpoints", g.endpoints, "data_dir", dir)
	}
	cli, err := g.etcdClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	layout := keyspace.MustNew(g.namespace)
	log.Info("node starting", "node", o.nodeID, "namespace", g.namespace, "etcd", g.endpoints,
		"memcached", o.memcached, "lease_ttl", o.leaseTTL, "write_concurrency", o.writers)
	err = node.Run(ctx, node.Config{
		Etcd: cli, Layout: layout, NodeID: o.nodeID, LeaseTTL: o.leaseTTL,
		Memcached: splitList(o.memcached), Limits: ops.Limits{MaxItemBytes: o.maxItemBytes},
		WriteConcurrency: o.writers, Logger: log,
	})
	log.Info("node stopped", "node", o.nodeID)
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
