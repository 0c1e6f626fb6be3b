package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/buildinfo"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/logging"
	"github.com/coordinator-dev/coordinator/pkg/monitor"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/readback"
	"github.com/coordinator-dev/coordinator/pkg/tracing"
)

type serveOptions struct {
	dataDir      string
	embedListen  string
	embedHistory time.Duration
	memcached    string
	distribution distributionFlag
	restore      bool
	readback     float64
	nodeID       string
	leaseTTL     time.Duration
	maxItemBytes int
	writers      int
	logLevel     string
	logFormat    string
	httpListen   string
	enablePprof  bool
	api          apiOptions
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
      --cacert /etc/coordinator/etcd-ca.pem \
      --cert /etc/coordinator/node.pem --key /etc/coordinator/node-key.pem \
      --memcached mc-1:11211,mc-2:11211,mc-3:11211 --memcached-distribution ketama \
      --node-id $(hostname -s) --http-listen :9090 --log-format json

  # the same, from an environment file (every flag has a COORDINATOR_ variable)
  set -a; . /etc/coordinator/coordinator.env; set +a; coordinator serve`,
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
	f.Var(&o.distribution, "memcached-distribution", "how keys are spread over --memcached: modula (gomemcache's) "+
		"or ketama (libmemcached's weighted ketama; host:port=weight sets a weight); it must match the namespace's topology")
	f.BoolVar(&o.restore, "restore-on-restart", false,
		"keep the latest value of every key written in etcd (one etcd key per memcached key) and write a restarted "+
			"memcached server's keys back from it; off, a restart is reported and its keys stay missing until written again")
	f.Float64Var(&o.readback, "readback-rate", readback.DefaultRate,
		"fraction of the leader's writes it reads back a moment later from the server a reader would use, "+
			"counted in coordinator_readback_total{result}; off the write path (samples beyond its queue are dropped); 0 turns it off")
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
	f.StringVar(&o.logFormat, "log-format", logging.FormatText,
		"log format: text (key=value lines) or json (one object per line); the etcd client's warnings are written the same way")
	f.StringVar(&o.httpListen, "http-listen", "",
		"host:port to serve /metrics (Prometheus) and the probes /livez, /healthz, /readyz, /readyz/api, /readyz/applier on; empty serves nothing")
	f.BoolVar(&o.enablePprof, "enable-pprof", false, "also serve Go's profiler under /debug/pprof/ (needs --http-listen)")
	o.api.addFlags(f)
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
	if o.readback < 0 || o.readback > 1 {
		return usagef("--readback-rate must be a fraction from 0 to 1 (got %g)", o.readback)
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
	if err := o.api.validate(); err != nil {
		return err
	}
	lcfg := logging.Config{Format: o.logFormat}
	if err := lcfg.Validate(); err != nil {
		return usageMsg(fmt.Sprintf("--log-format must be %s or %s, not %q", logging.FormatText, logging.FormatJSON, o.logFormat), err)
	}
	if o.httpListen != "" {
		if err := validateListen(o.httpListen); err != nil {
			return usagef("--http-listen: %w", err)
		}
	} else if o.enablePprof {
		return usagef("--enable-pprof needs --http-listen")
	}
	return nil
}

// validateListen checks a host:port to listen on; the host may be empty
// (every interface), the port must be a number (0 picks a free one).
func validateListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("port %q of %q is not a number from 0 to 65535", port, addr)
	}
	return nil
}

func runServe(cmd *cobra.Command, g *globalOptions, o *serveOptions) error {
	// A node may serve its own command line (--enable-pprof's
	// /debug/pprof/cmdline prints os.Args): keep the passwords out of it.
	if args, changed := redactArgs(os.Args); changed {
		os.Args = args
	}
	if err := g.validate(); err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.logLevel))
	handler, err := logging.NewHandler(logging.Config{Format: o.logFormat, Level: lvl, Output: cmd.ErrOrStderr()})
	if err != nil {
		return err
	}
	log := slog.New(handler)
	ctx := cmd.Context()
	// SIGHUP re-reads the TLS files at once rather than ending the node.
	defer reloadOnHangup(ctx, log)()

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
	// The etcd client's own warnings (lost connections, retries) go to the
	// node's log.
	g.etcdLogger = logging.Zap(handler.WithAttrs([]slog.Attr{slog.String("component", "etcd-client")}), slog.LevelWarn)
	cli, err := g.etcdClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	layout := keyspace.MustNew(g.namespace)
	log.Info("node starting", "node", o.nodeID, "namespace", g.namespace, "etcd", g.endpoints,
		"memcached", o.memcached, "lease_ttl", o.leaseTTL, "write_concurrency", o.writers)
	// Tracing only when OTEL_* variables ask for it (package tracing).
	tp, stopTracing, err := tracing.Start(ctx, tracing.Config{ServiceVersion: buildinfo.Read().Version})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("tracing: flushing spans failed", "err", err)
		}
	}()
	if tp != nil {
		log.Info("tracing to OTLP", "endpoint", cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")))
		o.api.tracerProvider = tp
	}
	// The API's gRPC health statuses follow the node's checks; nil runs
	// no checker for them when there is no API.
	var grpcHealth *grpchealth.Server
	if o.api.listen != "" {
		grpcHealth = newGRPCHealth()
	}
	stopAPI, insecureAPI, err := o.api.start(ctx, cli, g.namespace, ops.Limits{MaxItemBytes: o.maxItemBytes}, grpcHealth, log)
	if err != nil {
		return err
	}
	defer stopAPI()
	err = node.Run(ctx, node.Config{
		Etcd: cli, Layout: layout, NodeID: o.nodeID, LeaseTTL: o.leaseTTL,
		Memcached: splitList(o.memcached), Distribution: o.distribution.value(), Limits: ops.Limits{MaxItemBytes: o.maxItemBytes},
		WriteConcurrency: o.writers, Logger: log, Monitor: o.monitor(), RestoreOnRestart: o.restore,
		ReadbackRate: o.readback,
		Health:       health.Config{APIInsecureListener: insecureAPI, GRPC: grpcHealth},
		Collectors:   o.api.collectors(),
		// The leader's apply spans; nil (tracing off) makes none.
		TracerProvider: tp,
	})
	log.Info("node stopped", "node", o.nodeID)
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// newGRPCHealth returns a grpc.health.v1 server with every service the
// node's checker sets NOT_SERVING until its first round.
func newGRPCHealth() *grpchealth.Server {
	hs := grpchealth.NewServer()
	for _, svc := range []string{"", health.ServiceAPI, health.ServiceApplier} {
		hs.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return hs
}

// monitor is the node's HTTP monitor, nil without --http-listen.
func (o *serveOptions) monitor() *monitor.Config {
	if o.httpListen == "" {
		return nil
	}
	return &monitor.Config{Addr: o.httpListen, EnablePprof: o.enablePprof}
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
