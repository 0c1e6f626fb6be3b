package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/integration/faults/workload"
	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// cmdSet reads memcached's cmd_set counter.
func cmdSet(t *testing.T, addr string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("stats\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 8192)
	for !strings.Contains(string(buf), "END\r\n") {
		chunk := make([]byte, 4096)
		n, err := conn.Read(chunk)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		buf = append(buf, chunk[:n]...)
	}
	for _, line := range strings.Split(string(buf), "\r\n") {
		if v, ok := strings.CutPrefix(line, "STAT cmd_set "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("no cmd_set in stats")
	return 0
}

// TestBatchStoredOnceWhateverLeaseIsNamed replays the sequence that stored
// a batch twice: register sec and other, submit batch "cross" for sec with
// other's lease, unregister other, submit "cross" again with sec's own
// lease. The first is INVALID and writes nothing; the batch is stored
// once, and a resend after it was applied returns the first token. Through
// gRPC and through HTTP/JSON.
func TestBatchStoredOnceWhateverLeaseIsNamed(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)

	for _, via := range []string{"grpc", "http"} {
		sec := register(t, ctx, api, "sec-"+via, nil)
		other := register(t, ctx, api, "other-"+via, nil)
		key := "cross-" + via
		submit := func(lease int64, value string) (string, string) {
			req := &pb.SubmitRequest{Name: "sec-" + via, Incarnation: sec.Incarnation, BatchId: "cross", LeaseId: lease, Ops: []*pb.Op{setOp(key, value)}}
			if via == "grpc" {
				r, err := api.Submit(ctx, req)
				if err != nil {
					_, why := reason(err)
					return "", why
				}
				return r.Token, ""
			}
			res := post(t, ctx, n.Addr, "/v1/submit", map[string]any{
				"name": req.Name, "incarnation": strconv.FormatInt(req.Incarnation, 10), "batch_id": req.BatchId,
				"lease_id": strconv.FormatInt(req.LeaseId, 10), "ops": []any{map[string]any{"set": map[string]any{"key": key, "text": value}}},
			})
			if res.Code != http.StatusOK {
				return "", res.Reason()
			}
			tok, _ := res.Body["token"].(string)
			return tok, ""
		}
		before := cmdSet(t, c.mc.Addr)
		if tok, why := submit(other.LeaseId, "wrong"); why != apierr.ReasonInvalid {
			t.Fatalf("%s: submit under another's lease: token %q reason %q, want INVALID", via, tok, why)
		}
		if n := pendingKeys(t, ctx, c.etcd); n != 0 {
			t.Fatalf("%s: %d batches pending after a refused submission", via, n)
		}
		// A batch id without the lease cannot be recognised once applied.
		if tok, why := submit(0, "nolease"); why != apierr.ReasonInvalid {
			t.Fatalf("%s: batch id without lease: token %q reason %q, want INVALID", via, tok, why)
		}
		first, why := submit(sec.LeaseId, "once")
		if why != "" {
			t.Fatalf("%s: submit under the own lease: %s", via, why)
		}
		if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: first}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.Unregister(ctx, &pb.UnregisterRequest{Name: "other-" + via, Incarnation: other.Incarnation, LeaseId: other.LeaseId}); err != nil {
			t.Fatal(err)
		}
		again, why := submit(sec.LeaseId, "once")
		if why != "" || again != first {
			t.Fatalf("%s: resend after apply: token %q reason %q, want the first token %q", via, again, why, first)
		}
		if got := readKey(t, c.mc.Addr, key); got != "once" {
			t.Fatalf("%s: memcached holds %q, want once", via, got)
		}
		if sets := cmdSet(t, c.mc.Addr) - before; sets != 1 {
			t.Fatalf("%s: memcached took %d sets, want the batch written once", via, sets)
		}
	}
}

// TestDroppedStreamLeavesTheLeaseToItsTTL kills a caller's connection
// under its keep-alive stream (a cut, a proxy's reset): the registration
// lives on, submissions under it are accepted, and it ends by its TTL.
func TestDroppedStreamLeavesTheLeaseToItsTTL(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	reg := register(t, ctx, api, "dropped", &pb.RegisterRequest{TtlSeconds: 6})

	// A connection of its own, closed under the stream like a kill -9.
	conn := grpcConn(t, n.Addr)
	stream, err := pb.NewCoordinatorClient(conn).KeepAlive(ctx, &pb.KeepAliveRequest{Name: "dropped", Incarnation: reg.Incarnation, LeaseId: reg.LeaseId})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	ttl, err := c.etcd.TimeToLive(ctx, clientv3.LeaseID(reg.LeaseId))
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease after the connection dropped: TTL %v, %v", ttl, err)
	}
	r, err := api.Submit(ctx, &pb.SubmitRequest{Name: "dropped", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("dropped", "after")}})
	if err != nil {
		t.Fatalf("submit after the stream dropped, within the TTL: %v", err)
	}
	if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: r.Token}); err != nil {
		t.Fatal(err)
	}
	if got := readKey(t, c.mc.Addr, "dropped"); got != "after" {
		t.Fatalf("memcached holds %q, want after (G4)", got)
	}
	// Polled without renewing: KeepAliveOnce would keep it alive.
	testenv.Eventually(t, 20*time.Second, func() bool {
		ttl, err := c.etcd.TimeToLive(ctx, clientv3.LeaseID(reg.LeaseId))
		return err == nil && ttl.TTL == -1
	}, "the registration ends by its TTL")
	_, err = api.KeepAliveOnce(ctx, &pb.KeepAliveRequest{Name: "dropped", Incarnation: reg.Incarnation, LeaseId: reg.LeaseId})
	wantRefused(t, "keep-alive once the TTL ran out", err, codes.NotFound, apierr.ReasonExpired)
}

// TestKilledCallerProcessKeepsItsRegistrationToItsTTL runs a caller in its
// own process (integration/cmd/crashcaller -api) holding a keep-alive
// stream through the node, and kills it with SIGKILL. Its registration
// outlives the kill and ends by its TTL, and every submission it had
// acknowledged is applied (G4): memcached holds, for each key, the value
// of the last acknowledged operation on it.
func TestKilledCallerProcessKeepsItsRegistrationToItsTTL(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	ctx := testenv.Ctx(t, 90*time.Second)
	bin := harness.Build(t, "github.com/coordinator-dev/coordinator/integration/cmd/crashcaller", false)
	keys := []string{"kc0", "kc1", "kc2", "kc3"}
	p := harness.Start(t, "crashcaller", bin, "-api", n.Addr, "-name", "kc", "-keys", strings.Join(keys, ","),
		"-ttl", "6s", "-seed", "3", "-pause", "5ms")
	testenv.Eventually(t, 30*time.Second, func() bool {
		select {
		case <-p.Exited():
			t.Fatalf("crashcaller exited:\n%s", p.Output())
		default:
		}
		return strings.Count(p.Output(), `"result":"ok"`) >= 30
	}, "30 submissions of the caller process acknowledged")
	p.Kill()
	<-p.Exited()
	killed := time.Now()
	log, err := workload.ParseCallerLog(p.Output(), func(ns int64) int64 { return ns }, killed.UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	reg, ok, err := registry.New(c.etcd, keyspace.MustNew(keyspace.DefaultNamespace)).Get(ctx, "kc")
	if err != nil || !ok || reg.Incarnation != log.Registrations[0].Incarnation {
		t.Fatalf("registration right after the kill: %+v %v %v, want incarnation %d", reg, ok, err, log.Registrations[0].Incarnation)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, ok, err := registry.New(c.etcd, keyspace.MustNew(keyspace.DefaultNamespace)).Get(ctx, "kc")
		return err == nil && !ok
	}, "the killed caller's registration runs out")
	if since := time.Since(killed); since < 2*time.Second {
		t.Errorf("the registration ended %v after the kill, well inside its 6 s TTL", since)
	}
	// Everything accepted is applied: nothing stays pending.
	testenv.Eventually(t, 30*time.Second, func() bool { return pendingKeys(t, ctx, c.etcd) == 0 }, "nothing pending")
	last := map[string]checker.Op{}
	var lastTok = map[string]checker.Token{}
	unknown := map[string]bool{}
	for _, call := range log.Calls {
		for _, op := range call.Ops {
			if call.Result != checker.OK {
				unknown[op.Key] = true
				continue
			}
			if prev, seen := lastTok[op.Key]; !seen || prev.Less(call.Token) || prev == call.Token {
				lastTok[op.Key], last[op.Key] = call.Token, op
			}
		}
	}
	for _, k := range keys {
		op, ok := last[k]
		if !ok || unknown[k] {
			continue
		}
		want := op.Value
		if op.Kind == checker.KindDelete {
			want = ""
		}
		if got := readKey(t, c.mc.Addr, k); got != want {
			t.Errorf("%s = %q, want %q from the last acknowledged operation (G4)", k, got, want)
		}
	}
}

// TestAPIClientMovesItsStreamToAnotherNode gives pkg/apiclient two nodes:
// when the first stops, the caller's keep-alive stream and its calls go to
// the second with the same incarnation, past two lease TTLs, and the
// operations acknowledged before and after are applied.
func TestAPIClientMovesItsStreamToAnotherNode(t *testing.T) {
	c := startCluster(t)
	a := startAPI(t, c.etcd, apiserver.Config{})
	b := startAPI(t, c.etcd, apiserver.Config{})
	ac, err := apiclient.New(apiclient.Config{Addrs: []string{a.Addr, b.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ac.Close() })
	ctx := testenv.Ctx(t, 60*time.Second)
	caller, err := ac.Register(ctx, "moving", apiclient.RegisterConfig{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caller.Close(context.Background()) })
	if _, err := caller.Set(ctx, "moving", []byte("before"), 0); err != nil {
		t.Fatal(err)
	}
	a.Stop(t)
	stopped := time.Now()
	// Past two TTLs: only a stream on b can have kept the lease alive.
	var tok apiclient.Token
	testenv.Eventually(t, 30*time.Second, func() bool {
		tok, err = caller.Set(ctx, "moving", []byte("after"), 0)
		return err == nil && time.Since(stopped) > 4*time.Second
	}, "the caller carries on through the second node past two TTLs")
	if caller.Err() != nil {
		t.Fatalf("the incarnation ended: %v", caller.Err())
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if got := readKey(t, c.mc.Addr, "moving"); got != "after" {
		t.Fatalf("memcached holds %q, want after", got)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAuditLogNamesWhoChangedAName checks the audit lines of a
// registration, a takeover and an unregistration: JSON with the event,
// the name, the caller's identity and address.
func TestAuditLogNamesWhoChangedAName(t *testing.T) {
	c := startCluster(t)
	var logs syncBuffer
	n := startAPI(t, c.etcd, apiserver.Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 30*time.Second)
	first := register(t, ctx, api, "audited", nil)
	second := register(t, ctx, api, "audited", nil)
	if _, err := api.Unregister(ctx, &pb.UnregisterRequest{Name: "audited", Incarnation: second.Incarnation, LeaseId: second.LeaseId}); err != nil {
		t.Fatal(err)
	}
	var events []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["audit"] == true {
			events = append(events, rec)
		}
	}
	want := []string{"register", "takeover", "unregister"}
	if len(events) != len(want) {
		t.Fatalf("audit lines %v, want %v:\n%s", events, want, logs.String())
	}
	for i, e := range events {
		if e["event"] != want[i] || e["name"] != "audited" || e["identity"] != "addr:127.0.0.1" || e["addr"] != "127.0.0.1" {
			t.Errorf("audit line %d = %v, want event %s of audited by addr:127.0.0.1", i, e, want[i])
		}
	}
	if got := events[1]["superseded"]; got != float64(first.Incarnation) {
		t.Errorf("takeover names superseded %v, want incarnation %d", got, first.Incarnation)
	}
}
