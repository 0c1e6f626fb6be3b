package health_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// campaign runs a real election for node id with obs until the test ends.
func campaign(t *testing.T, id string, obs *election.Observer) {
	t.Helper()
	_, cli := testenv.Etcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = election.Run(ctx, election.Config{
			Etcd: cli, Layout: keyspace.MustNew("h"), NodeID: id, LeaseTTL: 2 * time.Second, Logger: testenv.Logger(), Observer: obs,
		}, func(l *election.Leadership) error {
			<-l.Context().Done()
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// run starts c's probes until the test ends.
func run(t *testing.T, c *health.Checker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitReport(t *testing.T, what string, get func() health.Report, ok bool, line string) health.Report {
	t.Helper()
	var r health.Report
	testenv.Eventually(t, 30*time.Second, func() bool {
		r = get()
		return r.OK == ok && strings.Contains(r.String(), line)
	}, "%s never was ok=%v with %q", what, ok, line)
	return r
}

func TestConfigValidate(t *testing.T) {
	obs, st := &election.Observer{}, &applier.Stats{}
	for _, cfg := range []health.Config{
		{Stats: st, Memcached: []string{"x:1"}},
		{Election: obs, Memcached: []string{"x:1"}},
		{Election: obs, Stats: st},
		{Election: obs, Stats: st, Memcached: []string{"x:1"}, MemcachedGrace: -1},
		{Election: obs, Stats: st, Memcached: []string{"x:1"}, EtcdWindow: -1},
		{Election: obs, Stats: st, Memcached: []string{"x:1"}, ProbeInterval: -1},
		{Election: obs, Stats: st, Memcached: []string{"x:1"}, StallWindow: -1},
	} {
		if _, err := health.New(cfg); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("New(%+v) = %v, want ErrBadConfig", cfg, err)
		}
	}
}

// A node that never campaigned is healthy at first (it has just started)
// but not ready, and not healthy once etcd has not answered it for longer
// than the window.
func TestNoSession(t *testing.T) {
	mc := testenv.StartMemcached(t)
	c, err := health.New(health.Config{
		Election: &election.Observer{}, Stats: &applier.Stats{}, Memcached: []string{mc.Addr}, EtcdWindow: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Health(); !r.OK {
		t.Errorf("a fresh node is unhealthy: %s", r)
	}
	r := c.Ready()
	if r.OK || !strings.Contains(r.String(), "fail lease: no election lease held") || !strings.Contains(r.String(), "fail role: not campaigning") {
		t.Errorf("a node without a session is ready: %s", r)
	}
	waitReport(t, "health", c.Health, false, "fail etcd: last answered")
}

// A leader is ready while its applier runs, not while it does not; it
// is not ready while memcached is unreachable for longer than the grace,
// and ready again once memcached answers.
func TestLeaderReadiness(t *testing.T) {
	mc := testenv.StartMemcached(t)
	obs, st := &election.Observer{}, &applier.Stats{}
	campaign(t, "n1", obs)
	c, err := health.New(health.Config{
		Election: obs, Stats: st, Memcached: []string{mc.Addr},
		MemcachedGrace: 200 * time.Millisecond, ProbeInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	waitReport(t, "ready", c.Ready, false, "fail role: leader of term 1, applier not running")
	st.Running.Store(true)
	r := waitReport(t, "ready", c.Ready, true, "ok role: leader of term 1, applying")
	for _, line := range []string{"ok etcd: answered", "ok lease: valid for", "ok memcached: reachable"} {
		if !strings.Contains(r.String(), line) {
			t.Errorf("ready report lacks %q: %s", line, r)
		}
	}
	if r := c.Health(); !r.OK {
		t.Errorf("leader unhealthy: %s", r)
	}

	mc.Stop()
	waitReport(t, "ready", c.Ready, true, "ok memcached: unreachable for")
	waitReport(t, "ready", c.Ready, false, "fail memcached: unreachable for")
	if down, err := c.MemcachedDownSince(); down.IsZero() || err == nil {
		t.Errorf("MemcachedDownSince = %v, %v while memcached is stopped", down, err)
	}
	if r := c.Health(); !r.OK {
		t.Errorf("memcached away made the node unhealthy: %s", r)
	}
	mc.Start()
	waitReport(t, "ready", c.Ready, true, "ok memcached: reachable")
}

// A standby is ready while it follows, and not while it is behind.
func TestStandbyReadiness(t *testing.T) {
	mc := testenv.StartMemcached(t)
	leader, standby := &election.Observer{}, &election.Observer{}
	_, cli := testenv.Etcd(t)
	for _, n := range []struct {
		id  string
		obs *election.Observer
	}{{"n1", leader}, {"n2", standby}} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = election.Run(ctx, election.Config{
				Etcd: cli, Layout: keyspace.MustNew("h"), NodeID: n.id, LeaseTTL: 2 * time.Second, Logger: testenv.Logger(), Observer: n.obs,
			}, func(l *election.Leadership) error {
				<-l.Context().Done()
				return nil
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
		testenv.Eventually(t, 30*time.Second, func() bool { return n.obs.State() != election.StateIdle }, "%s never campaigned", n.id)
	}
	st := &applier.Stats{}
	c, err := health.New(health.Config{Election: standby, Stats: st, Memcached: []string{mc.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	waitReport(t, "ready", c.Ready, true, "ok role: standby, following")
	st.StandbyBehind.Store(true)
	if r := c.Ready(); r.OK || !strings.Contains(r.String(), "fail role: standby behind") {
		t.Errorf("a standby behind is ready: %s", r)
	}
}

// An insecure API listener is reported as it was configured, and is no
// check: the reports do not change with it.
func TestAPIInsecureListenerIsNoCheck(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		c, err := health.New(health.Config{
			Election: &election.Observer{}, Stats: &applier.Stats{}, Memcached: []string{"127.0.0.1:1"},
			APIInsecureListener: insecure,
		})
		if err != nil {
			t.Fatal(err)
		}
		if c.APIInsecureListener() != insecure {
			t.Errorf("APIInsecureListener() = %v, want %v", c.APIInsecureListener(), insecure)
		}
		for _, r := range []health.Report{c.Health(), c.Ready()} {
			if strings.Contains(r.String(), "api") {
				t.Errorf("a report mentions the API: %s", r)
			}
		}
	}
}
