// Package cluster runs a whole coordinator deployment on loopback for fault
// tests: a 3-member etcd cluster whose members are separate OS processes
// (integration/cmd/etcdmember), one memcached process or a pool of them
// (Config.Pool), and 3 `coordinator serve` processes built from this
// repository. With Config.TLS the members serve their clients over TLS and
// ask for client certificates (certs.go); with Config.API the nodes serve
// their caller API.
//
// Every coordinator node talks to etcd through its own TCP proxy in front of
// one member (node i to member i) and to each memcached server through a
// proxy that tells the nodes apart (each node has its share,
// Node.MemcachedLinks), so
// a test can cut one node off from etcd while it still reaches memcached
// (the zombie leader), or kill exactly the member the leader talks to.
// Members reach each other through a proxy in front of each member's peer
// port (peers.go), so a member can be cut off from the others, or one
// direction between two members cut, while clients still reach it. Any
// process can be killed (SIGKILL), paused (SIGSTOP), resumed and restarted.
// Everything the cluster starts is stopped by pid when the test ends, pass
// or fail.
package cluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Config configures Start. The zero value is a 3+3 cluster with 2s leases.
type Config struct {
	// Members is the number of etcd members; default 3.
	Members int
	// Nodes is the number of coordinator nodes; default 3, negative for
	// none (an etcd cluster and memcached alone). Node i talks to member i
	// mod Members.
	Nodes int
	// LeaseTTL is the nodes' --lease-ttl; default 2s.
	LeaseTTL time.Duration
	// Namespace is the coordinator namespace; default "faults".
	Namespace string
	// StartTimeout bounds the start of each process; default 2 minutes.
	StartTimeout time.Duration
	// Monitor starts every node with --http-listen on a free port
	// (Node.MonitorAddr), for its /metrics.
	Monitor bool
	// Pool is the number of memcached servers; default 1. With more than
	// one, every server has a proxy of its own, shared by the nodes, and
	// the nodes write with --memcached-distribution ketama over the
	// proxies' addresses (Cluster.Ring).
	Pool int
	// TLS makes the etcd members serve their clients over TLS and refuse
	// clients without a certificate of the cluster's authority
	// (Cluster.Certs); the nodes and Cluster.Client connect with
	// certificates of it.
	TLS bool
	// API starts every node with --api-listen on a free port
	// (Node.APIAddr), its caller API; a node restarted keeps the port.
	API bool
	// ReadbackRate is the nodes' --readback-rate; zero means serve's
	// default.
	ReadbackRate float64
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
	if c.Pool == 0 {
		c.Pool = 1
	}
}

// Cluster is a running deployment.
type Cluster struct {
	// Members are the etcd members.
	Members []*Member
	// Memcached is the first memcached server (the only one without a
	// pool); readers use its address directly.
	Memcached *testenv.Memcached
	// MemcachedProxy is the proxy every node reaches Memcached through.
	MemcachedProxy *proxy.Proxy
	// Pool is every memcached server with its proxy, in the order the
	// nodes are given them; Pool[0] is Memcached and MemcachedProxy.
	Pool []*PoolServer
	// Ring is the deployment's distribution: the one the nodes write with,
	// over the proxies' addresses (what the nodes are given).
	Ring *hashring.Ring
	// Certs is the TLS material with Config.TLS, nil without.
	Certs *Certs
	// Nodes are the coordinator nodes.
	Nodes []*Node
	// Namespace and Layout are the coordinator's namespace.
	Namespace string
	Layout    keyspace.Layout
	// Client is an etcd client to every member directly (no proxy).
	Client *clientv3.Client

	t   testing.TB
	cfg Config
	// histMu guards hist, the copy of etcd's history Compact keeps, and
	// compactedAt, the revision of the last compaction.
	histMu      sync.Mutex
	hist        *historyCopy
	compactedAt int64
	// procMu guards the members' Proc fields while they start: the peer
	// proxies read them to name a connection's dialler.
	procMu sync.Mutex
}

// PoolServer is one memcached server of the deployment and the proxy the
// nodes reach it through.
type PoolServer struct {
	Memcached *testenv.Memcached
	Proxy     *proxy.Proxy
}

// Member is one etcd member process.
type Member struct {
	Name string
	// ClientAddr and PeerAddr are host:port; they stay across restarts.
	ClientAddr string
	PeerAddr   string
	// PeerLink is the proxy in front of PeerAddr; the member advertises its
	// address, so every other member reaches this one through it.
	PeerLink *proxy.Proxy
	Proc     *harness.Process
	// TLS is whether the member serves its clients over TLS.
	TLS bool
}

// Endpoint is the member's client URL.
func (m *Member) Endpoint() string { return scheme(m.TLS) + m.ClientAddr }

// scheme is the URL scheme of an etcd client endpoint.
func scheme(tls bool) string {
	if tls {
		return "https://"
	}
	return "http://"
}

// Node is one coordinator node process with its links.
type Node struct {
	*harness.Node
	// Member is the etcd member the node talks to.
	Member *Member
	// EtcdLink is the node's proxy to its member.
	EtcdLink *proxy.Proxy
	// MemcachedLink is the node's share of the memcached proxy.
	MemcachedLink proxy.Client
	// MemcachedLinks are the node's shares of every pool server's proxy,
	// in pool order; MemcachedLinks[0] is MemcachedLink.
	MemcachedLinks []proxy.Client
	// MonitorAddr is the node's --http-listen address with
	// Config.Monitor, "" without.
	MonitorAddr string
	// APIAddr is the node's --api-listen address with Config.API, ""
	// without.
	APIAddr string
}

// Start starts a cluster and waits until every process serves and a
// coordinator leader holds a term.
func Start(ctx context.Context, t testing.TB, cfg Config) *Cluster {
	t.Helper()
	cfg.defaults()
	c := &Cluster{t: t, cfg: cfg, Namespace: cfg.Namespace, Layout: keyspace.MustNew(cfg.Namespace)}
	if cfg.TLS {
		c.Certs = newCerts(t)
	}
	bin := EtcdMemberBinary(t)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = c.startMembers(ctx, bin); err == nil {
			break
		}
		t.Logf("etcd cluster did not start (attempt %d): %v", attempt+1, err)
		for _, m := range c.Members {
			if m.Proc != nil {
				m.Proc.Kill()
			}
			if m.PeerLink != nil {
				m.PeerLink.Close()
			}
		}
		c.procMu.Lock()
		c.Members = nil
		c.procMu.Unlock()
	}
	if err != nil {
		t.Fatalf("start etcd cluster: %v", err)
	}
	eps := make([]string, len(c.Members))
	for i, m := range c.Members {
		eps[i] = m.Endpoint()
	}
	c.Client, err = c.etcdClient(eps, c.Certs.root())
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Client.Close() })
	if err := c.WaitEtcdHealthy(ctx); err != nil {
		t.Fatalf("etcd cluster: %v", err)
	}

	c.startPool()
	servers := make([]string, len(c.Pool))
	for i, ps := range c.Pool {
		servers[i] = ps.Proxy.Addr()
	}
	var mcFlags []string
	if len(c.Pool) > 1 {
		mcFlags = []string{"--memcached-distribution", string(c.Ring.Distribution())}
	}
	for i := range cfg.Nodes {
		m := c.Members[i%len(c.Members)]
		el, err := proxy.New("127.0.0.1:0", m.ClientAddr)
		if err != nil {
			t.Fatalf("etcd proxy: %v", err)
		}
		t.Cleanup(func() { el.Close() })
		id := "node" + strconv.Itoa(i)
		extra := append(slices.Clone(mcFlags), c.Certs.Flags(c.Certs.node())...)
		var mon string
		if cfg.Monitor {
			mon = "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
			extra = append(extra, "--http-listen", mon)
		}
		if cfg.ReadbackRate != 0 {
			extra = append(extra, "--readback-rate", strconv.FormatFloat(cfg.ReadbackRate, 'g', -1, 64))
		}
		var api string
		if cfg.API {
			api = "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
			extra = append(extra, "--api-listen", api)
		}
		hn := harness.StartNode(t, harness.NodeOptions{
			ID:        id,
			Endpoints: []string{scheme(cfg.TLS) + el.Addr()},
			Memcached: strings.Join(servers, ","),
			Namespace: cfg.Namespace,
			LeaseTTL:  cfg.LeaseTTL,
			Extra:     extra,
		})
		n := &Node{Node: hn, Member: m, EtcdLink: el, MonitorAddr: mon, APIAddr: api}
		for _, ps := range c.Pool {
			n.MemcachedLinks = append(n.MemcachedLinks, ps.Proxy.Client(id))
		}
		n.MemcachedLink = n.MemcachedLinks[0]
		c.procMu.Lock()
		c.Nodes = append(c.Nodes, n)
		c.procMu.Unlock()
	}
	if len(c.Nodes) == 0 {
		return c
	}
	if _, err := c.WaitLeader(ctx, nil); err != nil {
		t.Fatalf("no coordinator leader: %v", err)
	}
	return c
}

// startPool starts the memcached servers, each behind a proxy of its own,
// and the ring over the proxies' addresses.
func (c *Cluster) startPool() {
	t := c.t
	servers := make([]hashring.Server, c.cfg.Pool)
	for i := range c.cfg.Pool {
		mc := testenv.StartMemcached(t)
		// Every node of a namespace must be given the same servers (the
		// namespace's topology in etcd names them), so the nodes share
		// each server's proxy; it tells the nodes apart by the process
		// that dialled.
		mp, err := proxy.Start(proxy.Config{Target: mc.Addr, Identify: c.nodeDialler})
		if err != nil {
			t.Fatalf("memcached proxy: %v", err)
		}
		t.Cleanup(func() { mp.Close() })
		c.Pool = append(c.Pool, &PoolServer{Memcached: mc, Proxy: mp})
		servers[i] = hashring.Server{Addr: mp.Addr()}
	}
	c.Memcached, c.MemcachedProxy = c.Pool[0].Memcached, c.Pool[0].Proxy
	dist := hashring.Modula
	if len(servers) > 1 {
		dist = hashring.Ketama
	}
	ring, err := hashring.New(hashring.Config{Distribution: dist, Servers: servers})
	if err != nil {
		t.Fatalf("memcached ring: %v", err)
	}
	c.Ring = ring
}

func (c *Cluster) startMembers(ctx context.Context, bin string) error {
	n := c.cfg.Members
	var peers []string
	// The members' ports stay bound until every peer proxy listens, so no
	// proxy's free port is one of them.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	hold := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.t.Fatalf("free port: %v", err)
		}
		held = append(held, l)
		return l.Addr().String()
	}
	for i := range n {
		m := &Member{Name: "m" + strconv.Itoa(i), ClientAddr: hold(), PeerAddr: hold(), TLS: c.cfg.TLS}
		c.procMu.Lock()
		c.Members = append(c.Members, m)
		c.procMu.Unlock()
	}
	for _, m := range c.Members {
		pl, err := c.newPeerLink(m)
		if err != nil {
			for _, o := range c.Members {
				if o.PeerLink != nil {
					o.PeerLink.Close()
				}
			}
			c.procMu.Lock()
			c.Members = nil
			c.procMu.Unlock()
			return fmt.Errorf("peer proxy: %w", err)
		}
		c.t.Cleanup(func() { pl.Close() })
		m.PeerLink = pl
		peers = append(peers, m.Name+"=http://"+pl.Addr())
	}
	for _, l := range held {
		l.Close()
	}
	held = nil
	dir := c.t.TempDir()
	for _, m := range c.Members {
		args := []string{"-name", m.Name, "-data-dir", filepath.Join(dir, m.Name),
			"-client", m.ClientAddr, "-peer", m.PeerAddr, "-advertise-peer", m.PeerLink.Addr(),
			"-initial-cluster", strings.Join(peers, ","),
			"-start-timeout", c.cfg.StartTimeout.String()}
		if c.Certs != nil {
			args = append(args, "-cert-file", c.Certs.Server.CertFile, "-key-file", c.Certs.Server.KeyFile,
				"-trusted-ca-file", c.Certs.CA.CertFile, "-client-cert-auth")
		}
		proc := harness.Start(c.t, "etcd-"+m.Name, bin, args...)
		c.procMu.Lock()
		m.Proc = proc
		c.procMu.Unlock()
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
