package security

import (
	"context"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/rbac"
)

// tlsEtcd is an embedded etcd serving TLS with client-certificate
// authentication, and the authority that signed its certificates.
type tlsEtcd struct {
	srv  *embedded.Server
	ca   *testcerts.CA
	root testcerts.Pair // a client certificate of user root
}

func startTLSEtcd(t *testing.T) *tlsEtcd {
	t.Helper()
	ca := testcerts.NewCA(t, "etcd")
	server := ca.Server("etcd-server")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx, embedded.Config{
		Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", LogLevel: "panic",
		ClientTLS: embedded.TLS{
			CertFile: server.CertFile, KeyFile: server.KeyFile,
			TrustedCAFile: ca.CertFile, ClientCertAuth: true,
		},
	})
	if err != nil {
		t.Fatalf("start TLS etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return &tlsEtcd{srv: srv, ca: ca, root: ca.Client("root")}
}

// conn returns the connection settings of a client with pair's
// certificate.
func (e *tlsEtcd) conn(pair testcerts.Pair) etcdconn.Config {
	return etcdconn.Config{
		Endpoints: e.srv.Endpoints(),
		Security:  etcdconn.Security{CACert: e.ca.CertFile, Cert: pair.CertFile, Key: pair.KeyFile},
	}
}

// dial dials with c; the client is closed when the test ends.
func dial(t *testing.T, c etcdconn.Config) *clientv3.Client {
	t.Helper()
	cli, err := etcdconn.Dial(context.Background(), c)
	if err != nil {
		t.Fatalf("dial %v: %v", c.Security, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// newClient returns a client.Client dialled with c, closed when the test
// ends.
func newClient(t *testing.T, c etcdconn.Config) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Endpoints: c.Endpoints, Security: c.Security})
	if err != nil {
		t.Fatalf("client.New %v: %v", c.Security, err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// startNode runs an in-process node over cli against memcached at mc.
func startNode(t *testing.T, cli *clientv3.Client, mc string) {
	t.Helper()
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: keyspace.MustNew(keyspace.DefaultNamespace), NodeID: "node-a", Memcached: []string{mc},
	})
}

// memcachedValue reads key from memcached at addr.
func memcachedValue(t *testing.T, addr, key string) string {
	t.Helper()
	mc := memcache.New(addr)
	mc.Timeout = 2 * time.Second
	it, err := mc.Get(key)
	if err != nil {
		t.Fatalf("memcached get %q: %v", key, err)
	}
	return string(it.Value)
}

// Users of the auth tests, and their passwords.
const (
	nodeUser = "coordinator-node"
	password = "s3cret-pw"
)

// enableAuth creates the root user, a node user with the node role and
// callers agent-7 and agent-8 limited to their names, all with password,
// then enables etcd's auth.
func enableAuth(t *testing.T, root *clientv3.Client) {
	t.Helper()
	ctx := testenv.Ctx(t, 30*time.Second)
	layout := keyspace.MustNew(keyspace.DefaultNamespace)
	mustDo := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := root.UserAdd(ctx, "root", password)
	mustDo("add root", err)
	_, err = root.UserGrantRole(ctx, "root", "root")
	mustDo("grant root", err)
	mustDo("node role", rbac.Grant(ctx, root, "coordinator-node", rbac.NodePermissions(layout)))
	_, err = root.UserAdd(ctx, nodeUser, password)
	mustDo("add node user", err)
	_, err = root.UserGrantRole(ctx, nodeUser, "coordinator-node")
	mustDo("grant node user", err)
	for _, name := range []string{"agent-7", "agent-8"} {
		role := "caller-" + name
		mustDo(role, rbac.Grant(ctx, root, role, rbac.CallerPermissions(layout, name)))
		_, err = root.UserAdd(ctx, name, password)
		mustDo("add "+name, err)
		_, err = root.UserGrantRole(ctx, name, role)
		mustDo("grant "+name, err)
	}
	_, err = root.AuthEnable(ctx)
	mustDo("auth enable", err)
}
