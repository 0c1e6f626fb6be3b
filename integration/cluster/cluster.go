// Package cluster runs a whole coordinator deployment on loopback for fault
// tests: a 3-member etcd cluster whose members are separate OS processes
// (integration/cmd/etcdmember), one memcached process, and 3 `coordinator
// serve` processes built from this repository.
//
// Every coordinator node talks to etcd through its own TCP proxy in front of
// one member (node i to member i) and to memcached through its own proxy, so
// a test can cut one node off from etcd while it still reaches memcached
// (the zombie leader), or kill exactly the member the leader talks to. Any
// process can be killed (SIGKILL), paused (SIGSTOP), resumed and restarted.
// Everything the cluster starts is stopped by pid when the test ends, pass
// or fail.
package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Config configures Start. The zero value is a 3+3 cluster with 2s leases.
type Config struct {
	// Members is the number of etcd members; default 3.
	Members int
	// Nodes is the number of coordinator nodes; default 3. Node i talks to
	// member i mod Members.
	Nodes int
	// LeaseTTL is the nodes' --lease-ttl; default 2s.
	LeaseTTL time.Duration
	// Namespace is the coordinator namespace; default "faults".
	Namespace string
	// StartTimeout bounds the start of each process; default 2 minutes.
	StartTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Members == 0 {
		c.Members = 3
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 2 * time.Second
	}
	if c.Namespace == "" {
		c.Namespace = "faults"
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 2 * time.Minute
	}
}

// Cluster is a running deployment.
type Cluster struct {
	// Members are the etcd members.
	Members []*Member
	// Memcached is the memcached process; readers use its address directly.
	Memcached *testenv.Memcached
	// Nodes are the coordinator nodes.
	Nodes []*Node
	// Namespace and Layout are the coordinator's namespace.
	Namespace string
	Layout    keyspace.Layout
	// Client is an etcd client to every member directly (no proxy).
	Client *clientv3.Client

	t   testing.TB
	cfg Config
}

// Member is one etcd member process.
type Member struct {
	Name string
	// ClientAddr and PeerAddr are host:port; they stay across restarts.
	ClientAddr string
	PeerAddr   string
	Proc       *harness.Process
}

// Endpoint is the member's client URL.
func (m *Member) Endpoint() string { return "http://" + m.ClientAddr }

// Node is one coordinator node process with its links.
type Node struct {
	*harness.Node
	// Member is the etcd member the node talks to.
	Member *Member
	// EtcdLink and MemcachedLink are the node's proxies.
	EtcdLink      *proxy.Proxy
	MemcachedLink *proxy.Proxy
}

// Start starts a cluster and waits until every process serves and a
// coordinator leader holds a term.
func Start(ctx context.Context, t testing.TB, cfg Config) *Cluster {
	t.Helper()
	cfg.defaults()
	c := &Cluster{t: t, cfg: cfg, Namespace: cfg.Namespace, Layout: keyspace.MustNew(cfg.Namespace)}
	bin := EtcdMemberBinary(t)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = c.startMembers(ctx, bin); err == nil {
			break
		}
		t.Logf("etcd cluster did not start (attempt %d): %v", attempt+1, err)
		for _, m := range c.Members {
			m.Proc.Kill()
		}
		c.Members = nil
	}
	if err != nil {
		t.Fatalf("start etcd cluster: %v", err)
	}
	eps := make([]string, len(c.Members))
	for i, m := range c.Members {
		eps[i] = m.Endpoint()
	}
	c.Client, err = clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Client.Close() })
	if err := c.WaitEtcdHealthy(ctx); err != nil {
		t.Fatalf("etcd cluster: %v", err)
	}

	c.Memcached = testenv.StartMemcached(t)
	for i := range cfg.Nodes {
		m := c.Members[i%len(c.Members)]
		el, err := proxy.New("127.0.0.1:0", m.ClientAddr)
		if err != nil {
			t.Fatalf("etcd proxy: %v", err)
		}
		ml, err := proxy.New("127.0.0.1:0", c.Memcached.Addr)
		if err != nil {
			el.Close()
			t.Fatalf("memcached proxy: %v", err)
		}
		t.Cleanup(func() { el.Close(); ml.Close() })
		hn := harness.StartNode(t, harness.NodeOptions{
			ID:        "node" + strconv.Itoa(i),
			Endpoints: []string{"http://" + el.Addr()},
			Memcached: ml.Addr(),
			Namespace: cfg.Namespace,
			LeaseTTL:  cfg.LeaseTTL,
		})
		c.Nodes = append(c.Nodes, &Node{Node: hn, Member: m, EtcdLink: el, MemcachedLink: ml})
	}
	if _, err := c.WaitLeader(ctx, nil); err != nil {
		t.Fatalf("no coordinator leader: %v", err)
	}
	return c
}

func (c *Cluster) startMembers(ctx context.Context, bin string) error {
	n := c.cfg.Members
	var peers []string
	for i := range n {
		m := &Member{
			Name:       "m" + strconv.Itoa(i),
			ClientAddr: "127.0.0.1:" + strconv.Itoa(harness.FreePort(c.t)),
			PeerAddr:   "127.0.0.1:" + strconv.Itoa(harness.FreePort(c.t)),
		}
		c.Members = append(c.Members, m)
		peers = append(peers, m.Name+"=http://"+m.PeerAddr)
	}
	dir := c.t.TempDir()
	for _, m := range c.Members {
		m.Proc = harness.Start(c.t, "etcd-"+m.Name, bin,
			"-name", m.Name, "-data-dir", filepath.Join(dir, m.Name),
			"-client", m.ClientAddr, "-peer", m.PeerAddr,
			"-initial-cluster", strings.Join(peers, ","),
			"-start-timeout", c.cfg.StartTimeout.String())
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	for _, m := range c.Members {
		if err := m.Proc.WaitOutput(sctx, "etcdmember ready"); err != nil {
			return fmt.Errorf("%w\n%s", err, m.Proc.Output())
		}
	}
	return nil
}

// Node returns the node with the given id, nil if none.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Observe reads the coordinator's leader and term.
func (c *Cluster) Observe(ctx context.Context) (election.Status, error) {
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return election.Observe(octx, c.Client, c.Layout)
}

// WaitLeader waits until a node leads and holds the latest term, and ok
// (when not nil) accepts the status.
func (c *Cluster) WaitLeader(ctx context.Context, ok func(election.Status) bool) (election.Status, error) {
	var last election.Status
	var lastErr error
	err := poll(ctx, 50*time.Millisecond, func() bool {
		st, err := c.Observe(ctx)
		if err != nil {
			lastErr = err
			return false
		}
		last = st
		return st.Leader != "" && st.Leader == st.TermHolder && (ok == nil || ok(st))
	})
	if err != nil {
		return last, fmt.Errorf("waiting for a leader (last seen %+v, last error %v): %w", last, lastErr, err)
	}
	return last, nil
}

// Leader returns the leading node once one leads.
func (c *Cluster) Leader(ctx context.Context) (*Node, election.Status, error) {
	st, err := c.WaitLeader(ctx, nil)
	if err != nil {
		return nil, st, err
	}
	n := c.Node(st.Leader)
	if n == nil {
		return nil, st, fmt.Errorf("leader %q is not a node of the cluster", st.Leader)
	}
	return n, st, nil
}

// WaitNewLeader waits until a node other than old leads with a term above
// term.
func (c *Cluster) WaitNewLeader(ctx context.Context, old string, term uint64) (election.Status, error) {
	return c.WaitLeader(ctx, func(st election.Status) bool { return st.Leader != old && st.Term > term })
}

// MemberStatus is what the maintenance Status API reports of one member.
type MemberStatus struct {
	Member *Member
	ID     uint64
	Leader uint64
	Err    error
}

// EtcdStatus asks every member for its status.
func (c *Cluster) EtcdStatus(ctx context.Context) []MemberStatus {
	out := make([]MemberStatus, len(c.Members))
	var wg sync.WaitGroup
	for i, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			resp, err := c.Client.Status(sctx, m.Endpoint())
			out[i] = MemberStatus{Member: m, Err: err}
			if err == nil {
				out[i].ID, out[i].Leader = resp.Header.MemberId, resp.Leader
			}
		}()
	}
	wg.Wait()
	return out
}

// EtcdLeader waits until the members that answer agree on a leader and
// returns it.
func (c *Cluster) EtcdLeader(ctx context.Context) (*Member, error) {
	var leader *Member
	err := poll(ctx, 50*time.Millisecond, func() bool {
		leader = nil
		st := c.EtcdStatus(ctx)
		var lid uint64
		for _, s := range st {
			if s.Err != nil {
				continue
			}
			if s.Leader == 0 || (lid != 0 && s.Leader != lid) {
				return false
			}
			lid = s.Leader
		}
		for _, s := range st {
			if s.Err == nil && s.ID == lid {
				leader = s.Member
			}
		}
		return leader != nil
	})
	if err != nil {
		return nil, fmt.Errorf("no etcd leader: %w", err)
	}
	return leader, nil
}

// WaitEtcdHealthy waits until every member answers, all agree on one
// leader, and a linearizable read succeeds.
func (c *Cluster) WaitEtcdHealthy(ctx context.Context) error {
	var why string
	err := poll(ctx, 100*time.Millisecond, func() bool {
		st := c.EtcdStatus(ctx)
		var lid uint64
		for _, s := range st {
			if s.Err != nil {
				why = fmt.Sprintf("member %s: %v", s.Member.Name, s.Err)
				return false
			}
			if s.Leader == 0 || (lid != 0 && s.Leader != lid) {
				why = "members disagree on the leader"
				return false
			}
			lid = s.Leader
		}
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := c.Client.Get(gctx, "health"); err != nil {
			why = err.Error()
			return false
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("etcd not healthy (%s): %w", why, err)
	}
	return nil
}

// KillMember kills an etcd member with SIGKILL and waits for it to exit.
func (c *Cluster) KillMember(m *Member) { m.Proc.Kill() }

// RestartMember starts a killed or stopped member again on its data
// directory and waits until it serves.
func (c *Cluster) RestartMember(ctx context.Context, m *Member) error {
	return restartAndWait(ctx, m.Proc, "etcdmember ready", c.cfg.StartTimeout)
}

// RestartNode starts a killed or stopped node again and waits until it
// runs.
func (c *Cluster) RestartNode(ctx context.Context, n *Node) error {
	return restartAndWait(ctx, n.Process, "node starting", c.cfg.StartTimeout)
}

// StopNode stops a node gracefully (SIGTERM) and waits for it to exit.
func (c *Cluster) StopNode(n *Node) { n.Stop(30 * time.Second) }

// Running reports whether a process has not exited.
func Running(p *harness.Process) bool {
	select {
	case <-p.Exited():
		return false
	default:
		return true
	}
}

func restartAndWait(ctx context.Context, p *harness.Process, ready string, timeout time.Duration) error {
	before := strings.Count(p.Output(), ready)
	p.Restart()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := poll(rctx, 20*time.Millisecond, func() bool {
		return strings.Count(p.Output(), ready) > before || !Running(p)
	})
	if err != nil {
		return fmt.Errorf("%s did not print %q after restart: %w", p.Name, ready, err)
	}
	if !Running(p) {
		return fmt.Errorf("%s exited after restart", p.Name)
	}
	return nil
}

// poll calls cond every interval until it returns true or ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Poll calls cond every interval until it returns true or ctx ends.
func Poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	return poll(ctx, interval, cond)
}

// EtcdMemberBinary builds integration/cmd/etcdmember once per test binary
// and returns its path; harness.Cleanup removes it.
func EtcdMemberBinary(t testing.TB) string {
	t.Helper()
	return harness.Build(t, "github.com/coordinator-dev/coordinator/integration/cmd/etcdmember", false)
}
