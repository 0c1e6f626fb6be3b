package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

func newAPIClient(t *testing.T, addr string) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(apiclient.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// G9 through the API: a session whose lease is lost while 32 goroutines
// submit re-registers once, and every call goes on under the new
// incarnation; everything acknowledged is applied.
func TestAPISessionManyCallsOneRenewal(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	ac := newAPIClient(t, n.Addr)
	ctx := testenv.Ctx(t, 60*time.Second)
	s, err := ac.NewSession(ctx, "agent", apiclient.SessionConfig{Register: apiclient.RegisterConfig{TTL: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	first := s.Incarnation()

	const goroutines = 32
	var (
		acked    atomic.Int64
		revoked  = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		last     tokenseq.Token
		errs     = make(chan error, goroutines)
		afterAck sync.WaitGroup
	)
	afterAck.Add(goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := 0
			for j := 0; after < 5; j++ {
				select {
				case <-revoked:
					after++
				default:
				}
				tok, err := s.Submit(ctx, setOpGo(fmt.Sprintf("g9-%d", g), fmt.Sprint(j))...)
				if err != nil {
					errs <- err
					afterAck.Done()
					return
				}
				acked.Add(1)
				mu.Lock()
				last = tokenseq.Max(last, tok)
				mu.Unlock()
			}
			afterAck.Done()
		}()
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return acked.Load() >= 200 }, "200 submissions acknowledged")
	// The lease is lost under every goroutine at once.
	reg, err := c.etcd.Get(ctx, "/coordinator/default/reg/agent")
	if err != nil || len(reg.Kvs) != 1 {
		t.Fatalf("registration: %v %v", reg, err)
	}
	if _, err := c.etcd.Revoke(ctx, clientv3.LeaseID(reg.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	close(revoked)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := s.Renewals(); got != 1 {
		t.Fatalf("%d re-registrations after one lost lease, want 1", got)
	}
	if s.Incarnation() == first {
		t.Fatal("the incarnation did not change")
	}
	if err := s.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	views, err := ac.API().Registrations(ctx, &pb.RegistrationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(views.Registrations) != 1 || views.Registrations[0].Incarnation != s.Incarnation() {
		t.Fatalf("registrations: %v", views.Registrations)
	}
}

// A session whose name is registered by another process stops for good.
func TestAPISessionSupersededIsFinal(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	ac := newAPIClient(t, n.Addr)
	ctx := testenv.Ctx(t, 60*time.Second)
	s, err := ac.NewSession(ctx, "agent", apiclient.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	tok, err := s.Submit(ctx, setOpGo("fin", "1")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	other := register(t, ctx, grpcClient(t, n.Addr, nil), "agent", nil)
	for range 2 {
		_, err = s.Submit(ctx, setOpGo("fin", "2")...)
		if !errors.Is(err, apiclient.ErrSuperseded) {
			t.Fatalf("submit after another process registered: %v, want ErrSuperseded", err)
		}
	}
	if s.Renewals() != 0 {
		t.Fatalf("a superseded session re-registered")
	}
	views, err := ac.API().Registrations(ctx, &pb.RegistrationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(views.Registrations) != 1 || views.Registrations[0].Incarnation != other.Incarnation {
		t.Fatalf("registrations: %v, want the other process's %d", views.Registrations, other.Incarnation)
	}
}

// A Caller keeps its lease alive by itself and frees the name at Close.
func TestAPICallerKeepsAliveAndCloses(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	ac := newAPIClient(t, n.Addr)
	ctx := testenv.Ctx(t, 60*time.Second)
	cl, err := ac.Register(ctx, "agent", apiclient.RegisterConfig{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testenv.Eventually(t, 10*time.Second, func() bool { return time.Since(start) > 4*time.Second }, "two TTLs")
	tok, err := cl.Set(ctx, "cl", []byte("v"), 0)
	if err != nil {
		t.Fatalf("submit two TTLs after Register: %v", err)
	}
	if err := cl.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if v := readKey(t, c.mc.Addr, "cl"); v != "v" {
		t.Fatalf("cl = %q", v)
	}
	if err := cl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := ac.Register(ctx, "agent", apiclient.RegisterConfig{IfAbsent: true})
	if err != nil {
		t.Fatalf("the name is not free after Close: %v", err)
	}
	defer again.Close(context.Background())
	_, err = ac.Register(ctx, "agent", apiclient.RegisterConfig{IfAbsent: true})
	if !errors.Is(err, apiclient.ErrNameHeld) {
		t.Fatalf("register a held name: %v, want ErrNameHeld", err)
	}
}
