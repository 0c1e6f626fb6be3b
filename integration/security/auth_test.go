package security

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// TestCallerLimitedToItsName: with etcd's auth on and the roles of package
// rbac, agent-7 registers and submits as agent-7, its operations are
// applied by a node authenticated as the node user, and its attempts to
// register or submit as agent-8 are refused with ErrPermissionDenied and
// write nothing.
func TestCallerLimitedToItsName(t *testing.T) {
	e := startTLSEtcd(t)
	root := dial(t, e.conn(e.root))
	enableAuth(t, root)
	mc := testenv.StartMemcached(t)
	layout := keyspace.MustNew(keyspace.DefaultNamespace)

	nodeConn := e.conn(e.ca.Client("node-cert"))
	nodeConn.Security.Username, nodeConn.Security.Password = nodeUser, password
	startNode(t, dial(t, nodeConn), mc.Addr)

	// agent-7 authenticates by its certificate's common name.
	cl := newClient(t, e.conn(e.ca.Client("agent-7")))
	ctx := testenv.Ctx(t, 60*time.Second)
	caller, err := cl.Register(ctx, "agent-7", client.RegisterConfig{})
	if err != nil {
		t.Fatalf("register agent-7 as agent-7: %v", err)
	}
	t.Cleanup(func() { _ = caller.Close(context.Background()) })
	tok, err := caller.Set(ctx, "k7", []byte("from-agent-7"), 0)
	if err != nil {
		t.Fatalf("submit as agent-7: %v", err)
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatalf("wait applied: %v", err)
	}
	if got := memcachedValue(t, mc.Addr, "k7"); got != "from-agent-7" {
		t.Fatalf("memcached has %q, want from-agent-7", got)
	}

	// A session as agent-7 (receipts, its lease watch, its pruner).
	sess, err := cl.NewSession(ctx, "agent-7", client.SessionConfig{})
	if err != nil {
		t.Fatalf("session as agent-7: %v", err)
	}
	tok, err = sess.Set(ctx, "k7", []byte("from-session"), 0)
	if err != nil {
		t.Fatalf("session submit as agent-7: %v", err)
	}
	if err := sess.WaitApplied(ctx, tok); err != nil {
		t.Fatalf("wait applied: %v", err)
	}
	if err := sess.Close(ctx); err != nil {
		t.Fatalf("close session: %v", err)
	}
	if got := memcachedValue(t, mc.Addr, "k7"); got != "from-session" {
		t.Fatalf("memcached has %q, want from-session", got)
	}

	// Register as agent-8.
	_, err = cl.Register(ctx, "agent-8", client.RegisterConfig{})
	t.Logf("register as agent-8: %v", err)
	if !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("register as agent-8: %v, want ErrPermissionDenied", err)
	}
	// A session as agent-8.
	_, err = cl.NewSession(ctx, "agent-8", client.SessionConfig{})
	if !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("session as agent-8: %v, want ErrPermissionDenied", err)
	}

	assertNoKeys(t, root, layout.Reg("agent-8"), false)

	// Submit as agent-8: agent-8 registered by its own user, then agent-7
	// sends a batch under agent-8's incarnation on its own connection,
	// past the client package, as a caller bent on it could.
	cl8 := newClient(t, e.conn(e.ca.Client("agent-8")))
	caller8, err := cl8.Register(ctx, "agent-8", client.RegisterConfig{})
	if err != nil {
		t.Fatalf("register agent-8 as agent-8: %v", err)
	}
	t.Cleanup(func() { _ = caller8.Close(context.Background()) })
	sub, err := tokenseq.NewSubmitter(tokenseq.SubmitterConfig{Etcd: cl.Etcd(), Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	_, err = sub.Submit(ctx, "agent-8", caller8.Incarnation(), "", []ops.Op{ops.Set("k8", []byte("forged"), 0)})
	t.Logf("submit as agent-8: %v", err)
	if !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("submit as agent-8: %v, want ErrPermissionDenied", err)
	}
	assertNoKeys(t, root, layout.NameOpsPrefix("agent-8"), true)
	assertNoKeys(t, root, layout.NameReceiptsPrefix("agent-8"), true)

	// agent-7 cannot delete agent-8's registration either.
	if _, err := cl.Etcd().Delete(ctx, layout.Reg("agent-8")); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("delete agent-8's registration as agent-7: %v, want ErrPermissionDenied", err)
	}
}

// assertNoKeys fails the test when etcd holds key (or a key under it, with
// prefix).
func assertNoKeys(t *testing.T, root *clientv3.Client, key string, prefix bool) {
	t.Helper()
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	resp, err := root.Get(context.Background(), key, append(opts, clientv3.WithCountOnly())...)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	if resp.Count != 0 {
		t.Fatalf("etcd holds %d keys at %q, want none", resp.Count, key)
	}
}

// TestDialAuthFailures: a wrong password is ErrAuth, and the error names
// the user but not the password.
func TestDialAuthFailures(t *testing.T) {
	e := startTLSEtcd(t)
	enableAuth(t, dial(t, e.conn(e.root)))
	c := e.conn(e.ca.Client("agent-7"))
	c.Security.Username, c.Security.Password = "agent-7", "not-"+password
	cli, err := etcdconn.Dial(context.Background(), c)
	if err == nil {
		cli.Close()
		t.Fatal("dial with a wrong password succeeded")
	}
	t.Logf("wrong password: %v", err)
	if !errors.Is(err, etcdconn.ErrAuth) || !strings.Contains(err.Error(), `"agent-7"`) || strings.Contains(err.Error(), password) {
		t.Fatalf("wrong password: %v, want ErrAuth naming agent-7 and not the password", err)
	}
	_, err = client.New(client.Config{Endpoints: c.Endpoints, Security: c.Security})
	if !errors.Is(err, etcdconn.ErrAuth) {
		t.Fatalf("client.New with a wrong password: %v, want ErrAuth", err)
	}
}

// TestSessionStopsOnPermissionDenied: a session whose user loses the right
// to write its batches gets ErrPermissionDenied from Submit at once, not a
// lookup retried until the context ends.
func TestSessionStopsOnPermissionDenied(t *testing.T) {
	e := startTLSEtcd(t)
	root := dial(t, e.conn(e.root))
	enableAuth(t, root)
	layout := keyspace.MustNew(keyspace.DefaultNamespace)
	cl := newClient(t, e.conn(e.ca.Client("agent-7")))
	ctx := testenv.Ctx(t, 60*time.Second)
	sess, err := cl.NewSession(ctx, "agent-7", client.SessionConfig{SkipDrain: true})
	if err != nil {
		t.Fatalf("session as agent-7: %v", err)
	}
	t.Cleanup(func() { _ = sess.Close(context.Background()) })
	if _, err := sess.Set(ctx, "k", []byte("v1"), 0); err != nil {
		t.Fatalf("submit before the revoke: %v", err)
	}
	ops := layout.NameOpsPrefix("agent-7")
	if _, err := root.RoleRevokePermission(ctx, "caller-agent-7", ops, keyspace.PrefixEnd(ops)); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = sess.Set(sctx, "k", []byte("v2"), 0)
	t.Logf("submit after the revoke: %v (%s)", err, time.Since(start))
	if !errors.Is(err, client.ErrPermissionDenied) || sctx.Err() != nil {
		t.Fatalf("submit after the revoke: %v, want ErrPermissionDenied before the context ends", err)
	}
}
