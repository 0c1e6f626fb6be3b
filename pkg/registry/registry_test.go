package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

func setup(t *testing.T) (*clientv3.Client, keyspace.Layout, *registry.Registry, context.Context) {
	_, cli := testenv.Etcd(t)
	layout := keyspace.MustNew("t")
	return cli, layout, registry.New(cli, layout), testenv.Ctx(t, 60*time.Second)
}

func TestRegisterStoresHolderUnderLease(t *testing.T) {
	cli, layout, reg, ctx := setup(t)
	inc, err := reg.Register(ctx, "agent", registry.RegisterConfig{TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, layout.Reg("agent"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("registration key: %v %v", resp, err)
	}
	kv := resp.Kvs[0]
	if kv.ModRevision != inc.Incarnation || clientv3.LeaseID(kv.Lease) != inc.LeaseID {
		t.Fatalf("incarnation %d lease %x, key has %d %x", inc.Incarnation, inc.LeaseID, kv.ModRevision, kv.Lease)
	}
	got, ok, err := reg.Get(ctx, "agent")
	if err != nil || !ok || got.Holder != registry.CurrentProcess() || got.TTL != 3*time.Second {
		t.Fatalf("Get = %+v %v %v", got, ok, err)
	}
	// The keep-alive holds the registration past its TTL: it is still
	// there, on the same lease, after twice the TTL.
	registered := time.Now()
	for time.Since(registered) < 2*got.TTL {
		r, err := cli.TimeToLive(ctx, inc.LeaseID)
		if err != nil || r.TTL <= 0 {
			t.Fatalf("lease gone after %s: %v", time.Since(registered), err)
		}
		select {
		case <-inc.Done():
			t.Fatalf("incarnation ended: %v", inc.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, ok, err := reg.Get(ctx, "agent"); err != nil || !ok {
		t.Fatalf("registration gone (%v)", err)
	}
	if err := inc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := reg.Get(ctx, "agent"); err != nil || ok {
		t.Fatalf("registration survived Close (%v)", err)
	}
	if !errors.Is(inc.Err(), registry.ErrClosed) {
		t.Fatalf("Err after Close = %v", inc.Err())
	}
}

func TestRegisterSupersedesAndIfAbsentRefuses(t *testing.T) {
	_, _, reg, ctx := setup(t)
	first, err := reg.Register(ctx, "svc", registry.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	_, err = reg.Register(ctx, "svc", registry.RegisterConfig{IfAbsent: true})
	if !errors.Is(err, registry.ErrNameHeld) {
		t.Fatalf("IfAbsent on a held name: %v", err)
	}
	second, err := reg.Register(ctx, "svc", registry.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(ctx)
	if second.Incarnation <= first.Incarnation {
		t.Fatalf("new incarnation %d not after %d", second.Incarnation, first.Incarnation)
	}
	cur, _, _ := reg.Get(ctx, "svc")
	if cur.Incarnation != second.Incarnation {
		t.Fatalf("current incarnation %d, want %d", cur.Incarnation, second.Incarnation)
	}
	// Closing the superseded incarnation does not remove the new one.
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, ok, _ := reg.Get(ctx, "svc"); !ok || cur.Incarnation != second.Incarnation {
		t.Fatal("closing the old incarnation removed the new registration")
	}
}

func TestLeaseLossIsReported(t *testing.T) {
	cli, _, reg, ctx := setup(t)
	inc, err := reg.Register(ctx, "svc", registry.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, inc.LeaseID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inc.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after the lease was revoked")
	}
	if !errors.Is(inc.Err(), registry.ErrLeaseLost) {
		t.Fatalf("Err = %v", inc.Err())
	}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	cli, _, reg, ctx := setup(t)
	start, _ := cli.Get(ctx, "x")
	for _, name := range []string{"", "a/b", "a b"} {
		if _, err := reg.Register(ctx, name, registry.RegisterConfig{}); !errors.Is(err, keyspace.ErrInvalidName) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if _, err := reg.Register(ctx, "ok", registry.RegisterConfig{TTL: 10 * time.Millisecond}); !errors.Is(err, registry.ErrBadTTL) {
		t.Errorf("short TTL: %v", err)
	}
	end, _ := cli.Get(ctx, "x")
	if start.Header.Revision != end.Header.Revision {
		t.Fatal("bad input wrote to etcd")
	}
	leases, err := cli.Leases(ctx)
	if err != nil || len(leases.Leases) != 0 {
		t.Fatalf("bad input left leases: %v %v", leases, err)
	}
}

// G7 at the registry level: WaitDrained blocks while an earlier incarnation
// has pending batches and returns when they are gone.
func TestWaitDrainedBlocksUntilEarlierBatchesAreGone(t *testing.T) {
	cli, layout, reg, ctx := setup(t)
	sub, err := tokenseq.NewSubmitter(tokenseq.SubmitterConfig{Etcd: cli, Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	old, err := reg.Register(ctx, "svc", registry.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := sub.Submit(ctx, "svc", old.Incarnation, "", []ops.Op{ops.Set("k", []byte("v"), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	registered := make(chan *registry.Incarnation, 1)
	errc := make(chan error, 1)
	go func() {
		inc, err := reg.Register(ctx, "svc", registry.RegisterConfig{WaitDrained: true})
		if err != nil {
			errc <- err
			return
		}
		registered <- inc
	}()
	// The new registration happens at once; it waits for the drain.
	testenv.Eventually(t, 10*time.Second, func() bool {
		cur, ok, _ := reg.Get(ctx, "svc")
		return ok && cur.Incarnation > old.Incarnation
	}, "new incarnation not registered")
	cur, _, _ := reg.Get(ctx, "svc")
	if n, _, err := reg.PendingBefore(ctx, "svc", cur.Incarnation); err != nil || n != 3 {
		t.Fatalf("pending before new incarnation = %d, %v", n, err)
	}
	select {
	case <-registered:
		t.Fatal("Register returned before the old incarnation drained")
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	// Play the applier: remove the old batches one by one.
	resp, err := cli.Get(ctx, layout.IncarnationOpsPrefix("svc", old.Incarnation), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if _, err := cli.Delete(ctx, string(kv.Key)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case inc := <-registered:
		defer inc.Close(ctx)
		if inc.Incarnation != cur.Incarnation {
			t.Fatalf("returned incarnation %d, registered %d", inc.Incarnation, cur.Incarnation)
		}
	case err := <-errc:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("Register did not return after the drain")
	}
}
