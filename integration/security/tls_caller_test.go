package security

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
)

// TestGoCallerOverTLS: a node and a Go caller reach an etcd that serves TLS
// and wants client certificates, with the right files; the caller's write
// reaches memcached.
func TestGoCallerOverTLS(t *testing.T) {
	e := startTLSEtcd(t)
	mc := testenv.StartMemcached(t)
	startNode(t, dial(t, e.conn(e.ca.Client("node"))), mc.Addr)
	cl := newClient(t, e.conn(e.ca.Client("agent-7")))
	ctx := testenv.Ctx(t, 60*time.Second)
	caller, err := cl.Register(ctx, "agent-7", client.RegisterConfig{})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	t.Cleanup(func() { _ = caller.Close(context.Background()) })
	tok, err := caller.Set(ctx, "tls-key", []byte("over-tls"), 0)
	if err != nil {
		t.Fatalf("set: %v", err)
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatalf("wait applied: %v", err)
	}
	if got := memcachedValue(t, mc.Addr, "tls-key"); got != "over-tls" {
		t.Fatalf("memcached has %q, want over-tls", got)
	}
}
