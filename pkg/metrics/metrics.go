// Package metrics exports a coordinator node's state as Prometheus metrics,
// on a registry of the node's own (two nodes in one process do not clash).
//
// Gauges and counters are read from the node's atomics when scraped
// (election.Observer, applier.Stats, memfence.Stats, health.Checker), so
// the node's work pays nothing for them; the two histograms and the memcached error counts
// are observed through applier.Hooks, once per round, per commit and per
// failed memcached call. Every name starts with "coordinator_"; the Go
// runtime's and the process's standard collectors are registered too.
//
// Every per-server memcached metric has a server label, the server's
// address as configured ("host:port" of the memcached flag, without its
// weight): coordinator_memcached_up, coordinator_memcached_unreachable_seconds,
// coordinator_memcached_errors_total (and kind) and
// coordinator_memcached_restarts_total. sum() over server is the pool's.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/buildinfo"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/readback"
)

// Namespace prefixes every metric name of this package.
const Namespace = "coordinator"

// Config configures a node's metrics.
type Config struct {
	// NodeID is the node's name, the node label of coordinator_node_info.
	NodeID string
	// Election is the node's election state; required.
	Election *election.Observer
	// Stats is the node's applier state; required.
	Stats *applier.Stats
	// Health, when set, adds the health, readiness and reachability
	// gauges.
	Health *health.Checker
	// Memcached, when set, adds the counters of what the leader notices of
	// its memcached servers (restarts).
	Memcached *memfence.Stats
	// MemcachedServers are the memcached servers as configured
	// ("host:port"), whose per-server counters (errors of every kind,
	// restarts) exist from the start, at 0, so that rate() and increase()
	// see their first count; another server's appear when first counted.
	MemcachedServers []string
	// Readback, when set, adds the counts of the leader's read-back
	// check (package readback).
	Readback *readback.Stats
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	switch {
	case c.Election == nil:
		return config.Errorf("metrics", "Election", "is nil")
	case c.Stats == nil:
		return config.Errorf("metrics", "Stats", "is nil")
	}
	return nil
}

// Metrics is a node's registry and the collectors it observes into.
type Metrics struct {
	reg       *prometheus.Registry
	rounds    prometheus.Histogram
	commits   prometheus.Histogram
	memErrors *prometheus.CounterVec // by kind and server
}

// durationBuckets spans 0.5 ms to about 16 s, doubling.
var durationBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16)

// New returns the node's metrics; its error is a *config.FieldError.
func New(cfg Config) (*Metrics, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rounds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "round_duration_seconds",
			Help:    "Time to write one round of batches to memcached (reads, writes and retries).",
			Buckets: durationBuckets,
		}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "commit_duration_seconds",
			Help:    "Time to commit one round: the etcd transactions that move the applied watermark and remove the round's batches.",
			Buckets: durationBuckets,
		}),
		memErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "memcached_errors_total",
			Help: "Failed memcached writes and reads of the applier, by server and kind: " + kindList() + ".",
		}, []string{"kind", "server"}),
	}
	for _, srv := range cfg.MemcachedServers {
		for _, k := range Kinds {
			m.memErrors.WithLabelValues(k, srv)
		}
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rounds, m.commits, m.memErrors,
	)
	m.reg.MustRegister(nodeCollectors(cfg)...)
	return m, nil
}

// Registry returns the node's registry, to serve (see package monitor).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Hooks returns the applier hooks that observe rounds, commits and
// memcached errors.
func (m *Metrics) Hooks() applier.Hooks {
	return applier.Hooks{
		Round:          func(_ int, took time.Duration) { m.rounds.Observe(took.Seconds()) },
		Commit:         func(_ int, took time.Duration) { m.commits.Observe(took.Seconds()) },
		MemcachedError: m.memcachedError,
	}
}

// memcachedError counts err under its server and kind: once per server it
// names (memfence.ServerErrors; a read fails at several at once), or once
// with an empty server when it names none.
func (m *Metrics) memcachedError(err error) {
	ses := memfence.ServerErrors(err)
	if len(ses) == 0 {
		m.memErrors.WithLabelValues(ErrorKind(err), "").Inc()
		return
	}
	for _, se := range ses {
		m.memErrors.WithLabelValues(ErrorKind(se), se.Server).Inc()
	}
}

func gauge(name, help string, f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, f)
}

func counter(name, help string, f func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, f)
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// since returns the seconds elapsed since unix nanoseconds ns, zero when ns
// is zero.
func since(ns int64) float64 {
	if ns == 0 {
		return 0
	}
	return time.Since(time.Unix(0, ns)).Seconds()
}

// nodeCollectors are the metrics read from the node's state when scraped.
func nodeCollectors(cfg Config) []prometheus.Collector {
	obs, st := cfg.Election, cfg.Stats
	b := buildinfo.Read()
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "build_info",
			Help:        "Always 1; the labels are the binary's version (stamped, or Go's module version), VCS revision and Go version.",
			ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Commit, "goversion": b.GoVersion},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "node_info", Help: "Always 1; the node label is the node's name in the election.",
			ConstLabels: prometheus.Labels{"node": cfg.NodeID},
		}, func() float64 { return 1 }),
		gauge("is_leader", "1 while this node leads the namespace, 0 otherwise.",
			func() float64 { return boolf(obs.IsLeader()) }),
		gauge("term", "Leadership term of this node's current leadership, or of its latest one; 0 if it never led.",
			func() float64 { return float64(obs.Term()) }),
		gauge("term_headroom", "Terms left after coordinator_term before the highest an item's flags hold (65535); at 0 a new leader refuses to lead until `coordinator topology reset-term`.",
			func() float64 { return float64(memfence.TermHeadroom(obs.Term())) }),
		counter("leaderships_total", "Leaderships this node has won.",
			func() float64 { return float64(obs.Won()) }),
		gauge("lease_remaining_seconds", "Time left until the local deadline of this node's election lease; negative once passed, 0 without a session.",
			func() float64 {
				dl := obs.LeaseDeadline()
				if dl.IsZero() {
					return 0
				}
				return time.Until(dl).Seconds()
			}),
		gauge("applied_watermark", "etcd revision of the applied watermark as this node last read or committed it.",
			func() float64 { return float64(st.Watermark.Load()) }),
		gauge("etcd_revision", "Highest etcd revision this node's applier or standby has seen in a response.",
			func() float64 { return float64(st.EtcdRevision.Load()) }),
		gauge("pending_batches", "Batches the leader has read and not committed yet (0 on a standby).",
			func() float64 { return float64(st.PendingBatches.Load()) }),
		gauge("pending_operations", "Operations of those batches.",
			func() float64 { return float64(st.PendingOps.Load()) }),
		gauge("oldest_pending_seconds", "Time since this node read the oldest batch it has not committed yet; 0 when there is none.",
			func() float64 { return since(st.OldestPending.Load()) }),
		counter("applied_operations_total", "Operations written to memcached.",
			func() float64 { return float64(st.Applied.Load()) }),
		counter("skipped_operations_total", "Operations not written because a newer operation on the same key came in the same round.",
			func() float64 { return float64(st.Skipped.Load()) }),
		counter("applied_batches_total", "Batches removed from etcd as applied or set aside.",
			func() float64 { return float64(st.Batches.Load()) }),
		counter("rounds_total", "Rounds written to memcached.",
			func() float64 { return float64(st.Rounds.Load()) }),
		counter("commits_total", "Watermark transactions committed.",
			func() float64 { return float64(st.Commits.Load()) }),
		counter("memcached_retries_total", "memcached writes made again after a transient failure.",
			func() float64 { return float64(st.Retries.Load()) }),
		counter("fenced_writes_total", "Writes memcached refused because a newer leader wrote the key: this node was a former leader, stopped at memcached.",
			func() float64 { return float64(st.Fenced.Load()) }),
		counter("quarantined_records_total", "Records or operations set aside under the quarantine prefix.",
			func() float64 { return float64(st.Quarantined.Load()) }),
		gauge("applier_running", "1 while this node's applier runs.",
			func() float64 { return boolf(st.Running.Load()) }),
		gauge("standby_backlog_batches", "Batches this node's standby holds while it campaigns.",
			func() float64 { return float64(st.StandbyHeld.Load()) }),
		gauge("standby_behind", "1 while this node's standby has fallen behind (more batches pending than it holds).",
			func() float64 { return boolf(st.StandbyBehind.Load()) }),
		counter("watches_total", "Watches of the pending batches the leader read from.",
			func() float64 { return float64(st.Watches.Load()) }),
		counter("standby_watches_total", "Watches the standby opened.",
			func() float64 { return float64(st.StandbyWatches.Load()) }),
		counter("standby_from_handover_batches_total", "Batches a standby held when its node won, handed to the applier.",
			func() float64 { return float64(st.FromStandby.Load()) }),
		campaignState(obs),
	}
	if ms := cfg.Memcached; ms != nil {
		cs = append(cs,
			&restartsCollector{st: ms, servers: cfg.MemcachedServers},
			counter("memcached_restart_checks_total", "Checks of every memcached server's stats for restarts that this node completed while it led.",
				func() float64 { return float64(ms.RestartChecks.Load()) }),
			counter("topology_moved_keys_total", "Keys this node's changes of topology moved to their new memcached server and read back there.",
				func() float64 { return float64(ms.MovedKeys.Load()) }),
			counter("topology_unmoved_keys_total", "Keys this node's changes of topology could not move: each stayed on its old server, named in the change record (`coordinator topology show -o json`).",
				func() float64 { return float64(ms.UnmovedKeys.Load()) }),
		)
	}
	if rb := cfg.Readback; rb != nil {
		cs = append(cs, &readbackCollector{st: rb})
	}
	if h := cfg.Health; h != nil {
		cs = append(cs,
			gauge("live", "1 while /livez passes.", func() float64 { return boolf(h.Live().OK) }),
			gauge("healthy", "1 while /healthz passes.", func() float64 { return boolf(h.Health().OK) }),
			gauge("ready", "1 while /readyz (the applier's readiness) passes.", func() float64 { return boolf(h.Ready().OK) }),
			gauge("api_ready", "1 while /readyz/api (the caller API's readiness) passes.", func() float64 { return boolf(h.APIReady().OK) }),
			&serversCollector{h: h},
			gauge("etcd_last_answer_seconds", "Time since etcd last granted or renewed this node's election lease.",
				func() float64 { return time.Since(h.EtcdLastAnswer()).Seconds() }),
			gauge("api_insecure_listener", "1 while this node's caller API listens beyond loopback without client certificates: anyone who reaches it can act as any name.",
				func() float64 { return boolf(h.APIInsecureListener()) }),
			gauge("etcd_nospace_alarm", "1 while etcd has a NOSPACE alarm raised: its database reached its quota and it refuses every write.",
				func() float64 { return boolf(h.NoSpace()) }),
		)
	}
	return cs
}

// Descriptors of the per-server memcached gauges of serversCollector.
var (
	memcachedUpDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "memcached_up"),
		"1 while the last probe of the memcached server succeeded.", []string{"server"}, nil)
	memcachedUnreachableDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "memcached_unreachable_seconds"),
		"Time the memcached server has been unreachable by the probes; 0 while it answers.", []string{"server"}, nil)
)

// serversCollector exports the health probes' view of each memcached
// server.
type serversCollector struct{ h *health.Checker }

// Describe sends the collector's descriptors.
func (c *serversCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- memcachedUpDesc
	ch <- memcachedUnreachableDesc
}

// Collect sends one series of each per server.
func (c *serversCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.h.Servers() {
		down := 0.0
		if !s.DownSince.IsZero() {
			down = time.Since(s.DownSince).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(memcachedUpDesc, prometheus.GaugeValue, boolf(s.DownSince.IsZero()), s.Addr)
		ch <- prometheus.MustNewConstMetric(memcachedUnreachableDesc, prometheus.GaugeValue, down, s.Addr)
	}
}

// memcachedRestartsDesc describes the per-server restart counter of
// restartsCollector.
var memcachedRestartsDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "memcached_restarts_total"),
	"Times this node found the memcached server restarted while it led (another pid, or a shorter uptime): its items were gone.",
	[]string{"server"}, nil)

// restartsCollector exports memfence.Stats' restarts by server: one series
// for each configured server, and for any other server counted.
type restartsCollector struct {
	st      *memfence.Stats
	servers []string
}

// Describe sends the collector's descriptor.
func (c *restartsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- memcachedRestartsDesc }

// Collect sends one series per server.
func (c *restartsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.st.ServerRestarts()
	if counts == nil {
		counts = make(map[string]uint64, len(c.servers))
	}
	for _, srv := range c.servers {
		if _, ok := counts[srv]; !ok {
			counts[srv] = 0
		}
	}
	for srv, n := range counts {
		ch <- prometheus.MustNewConstMetric(memcachedRestartsDesc, prometheus.CounterValue, float64(n), srv)
	}
}

// campaignStateCollector exports the campaign state as one series per
// state, 1 for the current one.
type campaignStateCollector struct {
	obs  *election.Observer
	desc *prometheus.Desc
}

func campaignState(obs *election.Observer) prometheus.Collector {
	return &campaignStateCollector{obs: obs, desc: prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "", "campaign_state"),
		"1 for this node's campaign state: idle (no session), campaigning (standing by) or leading.",
		[]string{"state"}, nil)}
}

// Describe sends the collector's one descriptor.
func (c *campaignStateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect sends one series per state.
func (c *campaignStateCollector) Collect(ch chan<- prometheus.Metric) {
	cur := c.obs.State()
	for _, s := range election.CampaignStates {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, boolf(s == cur), s.String())
	}
}

// Descriptors of the read-back counters of readbackCollector.
var (
	readbackDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "readback_total"),
		"Keys the leader read back a moment after writing them, from the server a reader would use, by result: ok, missing (on no server), stale (an older term or value, or present after its delete), misplaced (on another server only).",
		[]string{"result"}, nil)
	readbackDroppedDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "readback_dropped_total"),
		"Read-back samples not judged, by reason: queue_full (the check fell behind; the applier never waits for it), superseded (the key was written again, or moved, before its read), error (the read failed).",
		[]string{"reason"}, nil)
)

// readbackCollector exports readback.Stats.
type readbackCollector struct{ st *readback.Stats }

// Describe sends the collector's descriptors.
func (c *readbackCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readbackDesc
	ch <- readbackDroppedDesc
}

// Collect sends one series per result and per reason.
func (c *readbackCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range readback.Results {
		ch <- prometheus.MustNewConstMetric(readbackDesc, prometheus.CounterValue, float64(c.st.Count(r)), r.String())
	}
	for _, reason := range []string{readback.DropQueueFull, readback.DropSuperseded, readback.DropError} {
		ch <- prometheus.MustNewConstMetric(readbackDroppedDesc, prometheus.CounterValue, float64(c.st.Dropped(reason)), reason)
	}
}
