package inspect_test

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// G7: a caller registers and waits until every operation of the earlier
// incarnations of its name is applied; meanwhile inspection lists the
// earlier incarnation as draining with its count, and forgets it at zero.
func TestDrainBarrierAndDrainingView(t *testing.T) {
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", Memcached: []string{mc.Addr}})
	c, err := client.New(client.Config{Etcd: cli, Namespace: "t"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := inspect.New(cli, "t")
	if err != nil {
		t.Fatal(err)
	}
	old, err := c.Register(ctx, "svc", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	mc.Stop()
	for range 3 {
		if _, err := old.Set(ctx, "k", []byte("old"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// The old incarnation dies with its work pending (G4).
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}

	type result struct {
		caller *client.Caller
		err    error
	}
	registered := make(chan result, 1)
	go func() {
		nc, err := c.Register(ctx, "svc", client.RegisterConfig{WaitDrained: true})
		registered <- result{nc, err}
	}()
	var view []inspect.RegistrationView
	testenv.Eventually(t, 20*time.Second, func() bool {
		view, err = in.Registrations(ctx)
		return err == nil && len(view) == 2
	}, "registrations view never showed both incarnations: %+v %v", view, err)
	if v := view[0]; v.Incarnation != old.Incarnation() || v.Status != inspect.StatusDraining || v.Pending != 3 {
		t.Fatalf("old incarnation: %+v", v)
	}
	if v := view[1]; v.Status != inspect.StatusActive || v.Pending != 0 || v.TTLLeft <= 0 {
		t.Fatalf("new incarnation: %+v", v)
	}
	select {
	case r := <-registered:
		t.Fatalf("Register with WaitDrained returned before the drain: %+v", r)
	default:
	}

	mc.Start()
	var r result
	select {
	case r = <-registered:
	case <-ctx.Done():
		t.Fatal("Register never returned after memcached came back")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.caller.Close(context.Background())
	view, err = in.Registrations(ctx)
	if err != nil || len(view) != 1 || view[0].Incarnation != r.caller.Incarnation() {
		t.Fatalf("after drain: %+v %v", view, err)
	}
	st, err := in.Status(ctx)
	if err != nil || st.PendingOps != 0 || st.Registrations != 1 || st.Leader != "n1" || st.Term != 1 {
		t.Fatalf("status %+v %v", st, err)
	}
}
