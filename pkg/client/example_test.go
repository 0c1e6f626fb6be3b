package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// A caller registers under its name, submits operations, each accepted with
// a token, and waits until the leader has applied them to memcached, where
// any memcached client reads them.
func Example() {
	ctx := context.Background()
	etcdEndpoints, memcachedAddr := exampleDeployment()

	c, err := client.New(client.Config{Endpoints: etcdEndpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	caller, err := c.Register(ctx, "inventory-agent", client.RegisterConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer caller.Close(ctx)

	tok, err := caller.Set(ctx, "stock/apples", []byte("12"), 0)
	if err != nil {
		log.Fatal(err)
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		log.Fatal(err)
	}

	item, err := memcache.New(memcachedAddr).Get("stock/apples")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("stock/apples = %s\n", item.Value)
	// Output: stock/apples = 12
}

// Submit sends several operations as one batch: they are accepted together
// under one token, or not at all, and applied in the order given.
func ExampleCaller_Submit() {
	ctx := context.Background()
	etcdEndpoints, memcachedAddr := exampleDeployment()
	c, err := client.New(client.Config{Endpoints: etcdEndpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	caller, err := c.Register(ctx, "pricing-agent", client.RegisterConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer caller.Close(ctx)

	tok, err := caller.Submit(ctx,
		ops.Set("price/apples", []byte("0.40"), time.Hour),
		ops.Set("price/pears", []byte("0.55"), time.Hour),
		ops.Delete("price/plums"),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.WaitApplied(ctx, tok); err != nil {
		log.Fatal(err)
	}
	items, err := memcache.New(memcachedAddr).GetMulti([]string{"price/apples", "price/pears", "price/plums"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(items), string(items["price/apples"].Value), string(items["price/pears"].Value))
	// Output: 2 0.40 0.55
}

// A restart of a caller is a new incarnation of its name. Once it has
// registered, the old incarnation can no longer get anything accepted: its
// submissions are refused with ErrSuperseded, and nothing is written.
func ExampleClient_Register_superseded() {
	ctx := context.Background()
	etcdEndpoints, _ := exampleDeployment()
	c, err := client.New(client.Config{Endpoints: etcdEndpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	old, err := c.Register(ctx, "billing-agent", client.RegisterConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer old.Close(ctx)
	restarted, err := c.Register(ctx, "billing-agent", client.RegisterConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer restarted.Close(ctx)

	_, err = old.Set(ctx, "invoice/42", []byte("paid"), 0)
	fmt.Println(errors.Is(err, client.ErrSuperseded))
	fmt.Println(restarted.Incarnation() > old.Incarnation())
	// Output:
	// true
	// true
}

// A session keeps a name registered for as long as the process runs: it
// renews the lease, and when the lease is lost anyway (etcd unreachable for
// longer than the TTL) it registers a new incarnation and carries on, once,
// for all its concurrent submissions.
func ExampleClient_NewSession() {
	ctx := context.Background()
	etcdEndpoints, memcachedAddr := exampleDeployment()
	c, err := client.New(client.Config{Endpoints: etcdEndpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	s, err := c.NewSession(ctx, "session-agent", client.SessionConfig{TTL: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	var last client.Token
	for i := range 3 {
		if last, err = s.Set(ctx, "counter", []byte(fmt.Sprint(i)), 0); err != nil {
			log.Fatal(err)
		}
	}
	if err := s.WaitApplied(ctx, last); err != nil {
		log.Fatal(err)
	}
	item, err := memcache.New(memcachedAddr).Get("counter")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("counter = %s\n", item.Value)
	// Output: counter = 2
}

// WaitApplied waits until the leader has applied every operation up to a
// token; a context with a deadline bounds the wait.
func ExampleClient_WaitApplied() {
	ctx := context.Background()
	etcdEndpoints, _ := exampleDeployment()
	c, err := client.New(client.Config{Endpoints: etcdEndpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	caller, err := c.Register(ctx, "waiting-agent", client.RegisterConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer caller.Close(ctx)
	tok, err := caller.Delete(ctx, "session/expired")
	if err != nil {
		log.Fatal(err)
	}

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitApplied(wctx, tok); err != nil {
		fmt.Println("not applied yet:", err)
		return
	}
	fmt.Println("applied")
	// Output: applied
}
