// Package health judges whether a coordinator node is healthy (its process
// serves and etcd answers it) and ready (it leads and applies, or stands by
// able to take over), each with one line of reasons per check.
//
// Health: etcd answered the node (granted or renewed its election lease)
// within Config.EtcdWindow, by default one lease TTL. Readiness: the node's
// election lease deadline has not passed; it leads and its applier runs,
// or it campaigns with a standby that has not fallen behind (see
// applier.Standby); and memcached has not been unreachable for longer than
// Config.MemcachedGrace. memcached is probed by the Checker itself (a
// "version" to every server), since a standby writes nothing to it.
package health

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

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
	}
	return nil
}

// Check is the outcome of one check.
type Check struct {
	// Name names the check: process, etcd, lease, role, memcached.
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
	mc      *memcache.Client

	mu        sync.Mutex
	probed    bool
	failSince time.Time // zero while memcached answers
	lastErr   error
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
	mc := memcache.New(cfg.Memcached...)
	mc.Timeout = cfg.ProbeTimeout
	return &Checker{cfg: cfg, started: time.Now(), mc: mc}, nil
}

// Run probes memcached every ProbeInterval until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	defer c.mc.Close()
	tick := time.NewTicker(c.cfg.ProbeInterval)
	defer tick.Stop()
	for {
		c.probe(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe pings every memcached server once.
func (c *Checker) probe(at time.Time) {
	err := c.mc.Ping()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probed, c.lastErr = true, err
	switch {
	case err == nil:
		c.failSince = time.Time{}
	case c.failSince.IsZero():
		c.failSince = at
	}
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

// Ready reports whether the node is ready: healthy, within its election
// lease, leading and applying or standing by caught up, and memcached not
// unreachable for longer than MemcachedGrace.
func (c *Checker) Ready() Report {
	now := time.Now()
	return report(c.etcd(now), c.lease(now), c.role(), c.memcached(now))
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
