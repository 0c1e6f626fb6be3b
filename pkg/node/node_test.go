package node_test

import (
	"errors"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

func TestSetIsAppliedToMemcached(t *testing.T) {
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	layout := keyspace.MustNew("t")
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: layout, NodeID: "n1", Memcached: []string{mc.Addr}})

	c, err := client.New(client.Config{Etcd: cli, Namespace: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 30*time.Second)
	caller, err := c.Register(ctx, "demo", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := caller.Set(ctx, "hello", []byte("world"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	it, err := memcache.New(mc.Addr).Get("hello")
	if err != nil {
		t.Fatal(err)
	}
	if string(it.Value) != "world" {
		t.Fatalf("got %q", it.Value)
	}
	tok2, err := caller.Delete(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	if _, err := memcache.New(mc.Addr).Get("hello"); err != memcache.ErrCacheMiss {
		t.Fatalf("after delete: %v", err)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	for _, cfg := range []node.Config{
		{Layout: keyspace.MustNew("t"), NodeID: "n1"},
		{Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", Memcached: []string{"127.0.0.1:notaport"}},
		{Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", MaxTerm: 1 << 16},
	} {
		if err := node.Run(ctx, cfg); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("Run(%+v) = %v, want ErrBadConfig", cfg, err)
		}
	}
}
