package cluster

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
)

// Certs is a TLS cluster's material: one authority signs the members'
// server certificate and every client's certificate.
type Certs struct {
	// CA signs every certificate of the cluster.
	CA *testcerts.CA
	// Server is the members' certificate (127.0.0.1, ::1, localhost).
	Server testcerts.Pair
	// Node is the nodes' client certificate.
	Node testcerts.Pair
	// Caller is the workload's client certificate.
	Caller testcerts.Pair
	// Root is the test's own client certificate (Cluster.Client).
	Root testcerts.Pair
}

func newCerts(t testing.TB) *Certs {
	ca := testcerts.NewCA(t, "faults")
	return &Certs{CA: ca, Server: ca.Server("etcd"), Node: ca.Client("node"), Caller: ca.Client("caller"), Root: ca.Client("root")}
}

// node is the nodes' certificate; nil Certs have none.
func (c *Certs) node() testcerts.Pair {
	if c == nil {
		return testcerts.Pair{}
	}
	return c.Node
}

// root is the test client's certificate; nil Certs have none.
func (c *Certs) root() testcerts.Pair {
	if c == nil {
		return testcerts.Pair{}
	}
	return c.Root
}

// Flags are the `coordinator` flags that connect with the cluster's
// authority and p's certificate; none for nil Certs.
func (c *Certs) Flags(p testcerts.Pair) []string {
	if c == nil {
		return nil
	}
	return []string{"--cacert", c.CA.CertFile, "--cert", p.CertFile, "--key", p.KeyFile}
}

// Security is the etcdconn setting that connects with the cluster's
// authority and p's certificate; the zero Security for nil Certs.
func (c *Certs) Security(p testcerts.Pair) etcdconn.Security {
	if c == nil {
		return etcdconn.Security{}
	}
	return etcdconn.Security{CACert: c.CA.CertFile, Cert: p.CertFile, Key: p.KeyFile}
}

// CallerSecurity is the etcdconn setting of the workload's callers: the
// caller certificate with TLS, nothing without.
func (c *Cluster) CallerSecurity() etcdconn.Security {
	if c.Certs == nil {
		return etcdconn.Security{}
	}
	return c.Certs.Security(c.Certs.Caller)
}

// ClientURL is the etcd client URL of hostport (a member or a proxy in
// front of one): https:// with TLS, http:// without.
func (c *Cluster) ClientURL(hostport string) string { return scheme(c.cfg.TLS) + hostport }

// etcdClient connects to eps with p's certificate when the cluster has
// TLS.
func (c *Cluster) etcdClient(eps []string, p testcerts.Pair) (*clientv3.Client, error) {
	cc, err := etcdconn.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Security: c.Certs.Security(p)}.ClientConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(cc)
}

// ReadSelector picks a key's memcached server as the nodes do (Ring) and
// hands out that server's own address, not its proxy's: readers see what
// the server holds whatever is done to the nodes' links.
func (c *Cluster) ReadSelector() (memcache.ServerSelector, error) {
	direct := make([]string, len(c.Pool))
	for i, ps := range c.Pool {
		direct[i] = ps.Memcached.Addr
	}
	return NewDirectSelector(c.Ring, direct)
}

// NewDirectSelector returns a memcache.ServerSelector that picks a key's
// server with ring and answers with direct[i] for the ring's i-th server:
// the ring hashes the addresses the nodes were given (proxies), the reader
// dials the servers behind them.
func NewDirectSelector(ring *hashring.Ring, direct []string) (memcache.ServerSelector, error) {
	if len(direct) != len(ring.Servers()) {
		return nil, fmt.Errorf("cluster: %d direct addresses for %d servers", len(direct), len(ring.Servers()))
	}
	sl := new(memcache.ServerList)
	if err := sl.SetServers(direct...); err != nil {
		return nil, err
	}
	ds := &directSelector{ring: ring}
	_ = sl.Each(func(a net.Addr) error { ds.addrs = append(ds.addrs, a); return nil })
	return ds, nil
}

type directSelector struct {
	ring  *hashring.Ring
	addrs []net.Addr
}

func (d *directSelector) PickServer(key string) (net.Addr, error) {
	return d.addrs[d.ring.Index(key)], nil
}

func (d *directSelector) Each(f func(net.Addr) error) error {
	for _, a := range d.addrs {
		if err := f(a); err != nil {
			return err
		}
	}
	return nil
}

// ServerKeys returns the keys of keys that the nodes write to Pool[i].
func (c *Cluster) ServerKeys(i int, keys []string) []string {
	var out []string
	for _, k := range keys {
		if c.Ring.Index(k) == i {
			out = append(out, k)
		}
	}
	return out
}
