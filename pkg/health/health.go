// Package health judges whether a coordinator node is alive (its process is
// not wedged), healthy (its process serves and etcd answers it), ready to
// take callers' calls (its caller API can store submissions) and ready to
// apply (it leads and applies, or stands by able to take over), each with
// one line of reasons per check.
//
// Liveness: the Checker's own loop, which probes memcached and reads etcd's
// alarms with bounded waits, went round within Config.StallWindow. It never
// depends on etcd or memcached answering, so that a platform that restarts
// a failing process (a Kubernetes liveness probe) does not restart every
// node during an outage of either. Health: etcd answered the node (granted
// or renewed its election lease) within Config.EtcdWindow, by default one
// lease TTL. API readiness: etcd answered within EtcdWindow and has no
// NOSPACE alarm, which is all a submission needs; memcached and leading do
// not matter, since submissions are stored in etcd and applied by whichever
// node leads. Readiness (the applier's): the node's
// election lease deadline has not passed; it leads and its applier runs,
// or it campaigns with a standby that has not fallen behind (see
// applier.Standby); and memcached has not been unreachable for longer than
// Config.MemcachedGrace. memcached is probed by the Checker itself (a
// "version" to every server), since a standby writes nothing to it.
//
// With Config.GRPC, the Checker also sets the statuses of a grpc-go health
// server (grpc.health.v1): ServiceAPI and the empty service name follow API
// readiness, ServiceApplier follows readiness.
package health

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
)

// Defaults of Config.
const (
	// DefaultEtcdWindow is how recently etcd must have answered; it is the
	// default election lease TTL.
	DefaultEtcdWindow = election.DefaultLeaseTTL
	// DefaultMemcachedGrace is how long memcached may be unreachable before
	// the node is not ready: longer than a memcached restart, shorter than
	// an operator's patience.
	DefaultMemcachedGrace = 10 * time.Second
	// DefaultProbeInterval is the time between memcached probes.
	DefaultProbeInterval = time.Second
	// DefaultProbeTimeout bounds one memcached probe.
	DefaultProbeTimeout = time.Second
	// DefaultAlarmInterval is the time between reads of etcd's alarms.
	DefaultAlarmInterval = 5 * time.Second
	// DefaultStallWindow is the least time the Checker's loop may go
	// without a round before the process counts as wedged: far longer
	// than a round takes while etcd and memcached time out (see
	// Config.StallWindow).
	DefaultStallWindow = time.Minute
)

// Service names of the grpc.health.v1 statuses a Checker sets.
const (
	// ServiceAPI is the caller API's service, serving while API readiness
	// passes. The empty service name (the server as a whole, what a
	// Kubernetes gRPC probe without a service asks) follows it too.
	ServiceAPI = "coordinator.v1.Coordinator"
	// ServiceApplier is serving while readiness (the applier's) passes.
	ServiceApplier = "coordinator.applier"
)

// Config configures a Checker. Zero values mean the defaults noted.
type Config struct {
	// Election is the node's election state (election.Config.Observer).
	Election *election.Observer
	// Stats is the node's applier state (applier.Config.Stats).
	Stats *applier.Stats
	// Memcached lists the memcached servers probed (host:port).
	Memcached []string
	// EtcdWindow: the node is healthy while etcd answered it within this
	// long; zero means DefaultEtcdWindow. A node sets its lease TTL.
	EtcdWindow time.Duration
	// MemcachedGrace: the node is not ready once memcached has been
	// unreachable for longer; zero means DefaultMemcachedGrace.
	MemcachedGrace time.Duration
	// ProbeInterval is the time between memcached probes; zero means
	// DefaultProbeInterval.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe; zero means DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// APIInsecureListener records that the node's caller API listens
	// beyond loopback without client certificates, where anyone who
	// reaches it can act as any name. It is no check (the node is healthy
	// and ready either way) but a fact the node's metrics export
	// (coordinator_api_insecure_listener), so that an exposed node shows
	// on a dashboard and not only in its log.
	APIInsecureListener bool
	// Etcd, when set, is asked for etcd's alarms every AlarmInterval: a
	// NOSPACE alarm (etcd's database reached its quota, and etcd refuses
	// every write) fails readiness with check "etcd-space".
	Etcd *clientv3.Client
	// AlarmInterval is the time between alarm reads; zero means
	// DefaultAlarmInterval.
	AlarmInterval time.Duration
	// StallWindow: the process counts as wedged (liveness fails) once
	// the Checker's loop has not gone round for longer. A round waits at
	// most ProbeTimeout for memcached (every server is probed at once)
	// and AlarmInterval for etcd, so zero means the larger of
	// DefaultStallWindow and twice ProbeInterval plus those waits.
	StallWindow time.Duration
	// GRPC, when set, is a grpc-go health server whose statuses Run sets
	// after every round (ServiceAPI, "" and ServiceApplier) and sets to
	// NOT_SERVING when it returns. Its owner registers it on a gRPC
	// server.
	GRPC *grpchealth.Server
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	const pkg = "health"
	switch {
	case c.Election == nil:
		return config.Errorf(pkg, "Election", "is nil")
	case c.Stats == nil:
		return config.Errorf(pkg, "Stats", "is nil")
	case len(c.Memcached) == 0:
		return config.Errorf(pkg, "Memcached", "none given")
	case c.EtcdWindow < 0:
		return config.Errorf(pkg, "EtcdWindow", "%s is negative", c.EtcdWindow)
	case c.MemcachedGrace < 0:
		return config.Errorf(pkg, "MemcachedGrace", "%s is negative", c.MemcachedGrace)
	case c.ProbeInterval < 0:
		return config.Errorf(pkg, "ProbeInterval", "%s is negative", c.ProbeInterval)
	case c.ProbeTimeout < 0:
		return config.Errorf(pkg, "ProbeTimeout", "%s is negative", c.ProbeTimeout)
	case c.AlarmInterval < 0:
		return config.Errorf(pkg, "AlarmInterval", "%s is negative", c.AlarmInterval)
	case c.StallWindow < 0:
		return config.Errorf(pkg, "StallWindow", "%s is negative", c.StallWindow)
	}
	return nil
}

// Check is the outcome of one check.
type Check struct {
	// Name names the check: process, loop, etcd, lease, role, memcached,
	// etcd-space.
	Name string
	// OK reports whether it passed.
	OK bool
	// Detail says why.
	Detail string
}

// Report is the outcome of a set of checks: OK when all of them passed.
type Report struct {
	OK     bool
	Checks []Check
}

// String returns one line per check, "ok <name>: <detail>" or
// "fail <name>: <detail>".
func (r Report) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		status := "ok"
		if !c.OK {
			status = "fail"
		}
		fmt.Fprintf(&b, "%s %s: %s\n", status, c.Name, c.Detail)
	}
	return b.String()
}

func report(checks ...Check) Report {
	r := Report{OK: true, Checks: checks}
	for _, c := range checks {
		r.OK = r.OK && c.OK
	}
	return r
}

// Checker judges a node's health and readiness. Its methods are safe for
// concurrent use.
type Checker struct {
	cfg     Config
	started time.Time
	servers []string           // cfg.Memcached without repeats
	mcs     []*memcache.Client // one per server, to tell them apart

	mu         sync.Mutex
	probed     bool
	failSince  time.Time // zero while memcached answers
	lastErr    error
	serverDown []time.Time // by server: zero while it answers
	serverErr  []error     // by server: its last probe's error
	noSpace    []uint64    // members with a NOSPACE alarm, by the last read
	lastRound  time.Time   // end of the loop's last round, or Run's start; zero before Run
}

// New returns a Checker; its error is a *config.FieldError. Until Run
// probes memcached, memcached counts as reachable.
func New(cfg Config) (*Checker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.EtcdWindow = cmp.Or(cfg.EtcdWindow, DefaultEtcdWindow)
	cfg.MemcachedGrace = cmp.Or(cfg.MemcachedGrace, DefaultMemcachedGrace)
	cfg.ProbeInterval = cmp.Or(cfg.ProbeInterval, DefaultProbeInterval)
	cfg.ProbeTimeout = cmp.Or(cfg.ProbeTimeout, DefaultProbeTimeout)
	cfg.AlarmInterval = cmp.Or(cfg.AlarmInterval, DefaultAlarmInterval)
	if cfg.StallWindow == 0 {
		round := cfg.ProbeInterval + cfg.ProbeTimeout + cfg.AlarmInterval
		cfg.StallWindow = max(DefaultStallWindow, 2*round)
	}
	c := &Checker{cfg: cfg, started: time.Now()}
	seen := map[string]bool{}
	for _, addr := range cfg.Memcached {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		mc := memcache.New(addr)
		mc.Timeout = cfg.ProbeTimeout
		c.servers, c.mcs = append(c.servers, addr), append(c.mcs, mc)
	}
	c.serverDown, c.serverErr = make([]time.Time, len(c.servers)), make([]error, len(c.servers))
	return c, nil
}

// APIInsecureListener reports Config.APIInsecureListener.
func (c *Checker) APIInsecureListener() bool { return c.cfg.APIInsecureListener }

// Run probes memcached every ProbeInterval, and reads etcd's alarms every
// AlarmInterval when Config.Etcd is set, until ctx ends; with Config.GRPC
// it sets the gRPC statuses after every round.
func (c *Checker) Run(ctx context.Context) {
	defer func() {
		for _, mc := range c.mcs {
			_ = mc.Close()
		}
	}()
	if hs := c.cfg.GRPC; hs != nil {
		defer func() {
			for _, svc := range []string{"", ServiceAPI, ServiceApplier} {
				hs.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
			}
		}()
	}
	// A first round that never ends counts as a stall too.
	c.mu.Lock()
	c.lastRound = time.Now()
	c.mu.Unlock()
	tick := time.NewTicker(c.cfg.ProbeInterval)
	defer tick.Stop()
	var alarms <-chan time.Time
	if c.cfg.Etcd != nil {
		t := time.NewTicker(c.cfg.AlarmInterval)
		defer t.Stop()
		alarms = t.C
		c.readAlarms(ctx)
	}
	for {
		c.probe(time.Now())
		c.endRound(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-alarms:
			c.readAlarms(ctx)
		}
	}
}

// readAlarms reads etcd's alarms; a failed read keeps the last answer
// (etcd's own reachability is the etcd check's).
func (c *Checker) readAlarms(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.AlarmInterval)
	defer cancel()
	resp, err := c.cfg.Etcd.AlarmList(rctx)
	if err != nil {
		return
	}
	var members []uint64
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			members = append(members, a.MemberID)
		}
	}
	c.mu.Lock()
	c.noSpace = members
	c.mu.Unlock()
}

// endRound records that the loop went round at, and sets the gRPC
// statuses.
func (c *Checker) endRound(at time.Time) {
	c.mu.Lock()
	c.lastRound = at
	c.mu.Unlock()
	hs := c.cfg.GRPC
	if hs == nil {
		return
	}
	api, apply := status(c.APIReady().OK), status(c.Ready().OK)
	hs.SetServingStatus("", api)
	hs.SetServingStatus(ServiceAPI, api)
	hs.SetServingStatus(ServiceApplier, apply)
}

func status(ok bool) healthpb.HealthCheckResponse_ServingStatus {
	if ok {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// NoSpace reports whether etcd had a NOSPACE alarm raised at the last read
// of its alarms.
func (c *Checker) NoSpace() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.noSpace) > 0
}

// probe pings every memcached server once, all at once, so that a round
// takes one ProbeTimeout however many servers time out.
func (c *Checker) probe(at time.Time) {
	errs := make([]error, len(c.mcs))
	var wg sync.WaitGroup
	for i, mc := range c.mcs {
		wg.Go(func() { errs[i] = mc.Ping() })
	}
	wg.Wait()
	var err error // the report's one line: the first failure, and how many
	if failed := slices.DeleteFunc(slices.Clone(errs), func(e error) bool { return e == nil }); len(failed) == 1 {
		err = failed[0]
	} else if len(failed) > 1 {
		err = fmt.Errorf("%d of %d servers, first: %w", len(failed), len(errs), failed[0])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probed, c.lastErr = true, err
	switch {
	case err == nil:
		c.failSince = time.Time{}
	case c.failSince.IsZero():
		c.failSince = at
	}
	for i, e := range errs {
		c.serverErr[i] = e
		switch {
		case e == nil:
			c.serverDown[i] = time.Time{}
		case c.serverDown[i].IsZero():
			c.serverDown[i] = at
		}
	}
}

// ServerState is what the probes found of one memcached server.
type ServerState struct {
	// Addr is the server's host:port, as in Config.Memcached.
	Addr string
	// DownSince is when it stopped answering the probes; zero while it
	// answers, and before the first probe.
	DownSince time.Time
	// Err is its last probe's error.
	Err error
}

// Servers returns the state of every memcached server, in the order of
// Config.Memcached.
func (c *Checker) Servers() []ServerState {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ServerState, len(c.servers))
	for i, addr := range c.servers {
		out[i] = ServerState{Addr: addr, DownSince: c.serverDown[i], Err: c.serverErr[i]}
	}
	return out
}

// MemcachedDownSince returns when memcached became unreachable, by the
// probes, and the last probe's error; the zero time while it answers.
func (c *Checker) MemcachedDownSince() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failSince, c.lastErr
}

// EtcdLastAnswer returns when etcd last answered the node: its election
// lease's last grant or renewal, or the Checker's start before that.
func (c *Checker) EtcdLastAnswer() time.Time {
	last := c.cfg.Election.LastAnswer()
	if last.Before(c.started) {
		return c.started
	}
	return last
}

// Health reports whether the node is healthy: its process serves (it is
// asked) and etcd answered it within EtcdWindow.
func (c *Checker) Health() Report {
	now := time.Now()
	return report(
		Check{Name: "process", OK: true, Detail: "serving, up " + ago(now, c.started)},
		c.etcd(now),
	)
}

// Live reports whether the process is alive: it serves (it is asked) and
// the Checker's loop went round within StallWindow, or Run has not been
// called. Neither etcd nor memcached being away fails it.
func (c *Checker) Live() Report {
	now := time.Now()
	c.mu.Lock()
	last := c.lastRound
	c.mu.Unlock()
	loop := Check{Name: "loop", OK: true, Detail: "not started"}
	if !last.IsZero() {
		d := now.Sub(last)
		loop.OK = d <= c.cfg.StallWindow
		loop.Detail = fmt.Sprintf("last went round %s ago", round(d))
		if !loop.OK {
			loop.Detail += fmt.Sprintf(", over %s: the process is wedged", c.cfg.StallWindow)
		}
	}
	return report(Check{Name: "process", OK: true, Detail: "serving, up " + ago(now, c.started)}, loop)
}

// APIReady reports whether the node's caller API can take calls: etcd
// answered the node within EtcdWindow and, when Config.Etcd is set, has no
// NOSPACE alarm. It does not depend on memcached or on the node leading.
func (c *Checker) APIReady() Report {
	checks := []Check{c.etcd(time.Now())}
	if c.cfg.Etcd != nil {
		checks = append(checks, c.etcdSpace())
	}
	return report(checks...)
}

// Ready reports whether the node is ready: healthy, within its election
// lease, leading and applying or standing by caught up, and memcached not
// unreachable for longer than MemcachedGrace.
func (c *Checker) Ready() Report {
	now := time.Now()
	checks := []Check{c.etcd(now), c.lease(now), c.role(), c.memcached(now)}
	if c.cfg.Etcd != nil {
		checks = append(checks, c.etcdSpace())
	}
	return report(checks...)
}

// etcdSpace fails while etcd has a NOSPACE alarm: every write, of every
// caller and of the leader, is refused until an operator frees space.
func (c *Checker) etcdSpace() Check {
	c.mu.Lock()
	members := c.noSpace
	c.mu.Unlock()
	if len(members) == 0 {
		return Check{Name: "etcd-space", OK: true, Detail: "no NOSPACE alarm"}
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = fmt.Sprintf("%x", m)
	}
	return Check{Name: "etcd-space", Detail: "NOSPACE alarm on member " + strings.Join(ids, ", ") +
		": etcd refuses every write until space is freed (compact, defragment, disarm; docs/deploy.md)"}
}

func (c *Checker) etcd(now time.Time) Check {
	last := c.EtcdLastAnswer()
	d := now.Sub(last)
	if d > c.cfg.EtcdWindow {
		return Check{Name: "etcd", Detail: fmt.Sprintf("last answered %s ago, over %s", round(d), c.cfg.EtcdWindow)}
	}
	return Check{Name: "etcd", OK: true, Detail: fmt.Sprintf("answered %s ago", round(d))}
}

func (c *Checker) lease(now time.Time) Check {
	dl := c.cfg.Election.LeaseDeadline()
	switch {
	case dl.IsZero():
		return Check{Name: "lease", Detail: "no election lease held"}
	case !now.Before(dl):
		return Check{Name: "lease", Detail: fmt.Sprintf("deadline passed %s ago", round(now.Sub(dl)))}
	}
	return Check{Name: "lease", OK: true, Detail: fmt.Sprintf("valid for %s", round(dl.Sub(now)))}
}

func (c *Checker) role() Check {
	obs, st := c.cfg.Election, c.cfg.Stats
	switch obs.State() {
	case election.StateLeading:
		if !st.Running.Load() {
			return Check{Name: "role", Detail: fmt.Sprintf("leader of term %d, applier not running", obs.Term())}
		}
		return Check{Name: "role", OK: true, Detail: fmt.Sprintf("leader of term %d, applying", obs.Term())}
	case election.StateCampaigning:
		if st.StandbyBehind.Load() {
			return Check{Name: "role", Detail: "standby behind: more batches pending than it holds"}
		}
		return Check{Name: "role", OK: true, Detail: fmt.Sprintf("standby, following (%d batches held)", st.StandbyHeld.Load())}
	}
	return Check{Name: "role", Detail: "not campaigning"}
}

func (c *Checker) memcached(now time.Time) Check {
	c.mu.Lock()
	probed, since, err := c.probed, c.failSince, c.lastErr
	c.mu.Unlock()
	switch {
	case !probed:
		return Check{Name: "memcached", OK: true, Detail: "not probed yet"}
	case since.IsZero():
		return Check{Name: "memcached", OK: true, Detail: "reachable"}
	}
	d := now.Sub(since)
	if d > c.cfg.MemcachedGrace {
		return Check{Name: "memcached", Detail: fmt.Sprintf("unreachable for %s, over %s: %v", round(d), c.cfg.MemcachedGrace, err)}
	}
	return Check{Name: "memcached", OK: true,
		Detail: fmt.Sprintf("unreachable for %s, within %s: %v", round(d), c.cfg.MemcachedGrace, err)}
}

func ago(now, t time.Time) string { return round(now.Sub(t)).String() }

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
