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
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
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

// EtcdMemberBinary builds integration/cmd/etcdmember once per test binary
// and returns its path; harness.Cleanup removes it.
func EtcdMemberBinary(t testing.TB) string {
	t.Helper()
	return harness.Build(t, "github.com/coordinator-dev/coordinator/integration/cmd/etcdmember", false)
}
