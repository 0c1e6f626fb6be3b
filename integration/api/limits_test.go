package api

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// TestHostileCallerIsBoundedAndOthersGoOn runs a caller that floods the
// node with registrations carrying oversized hosts and then valid ones,
// bounded in count and time, while another caller submits. The oversized
// hosts are INVALID, the flood is cut by the registration rate and the
// node's registration cap, etcd's database stays within a stated bound,
// and every submission of the other caller is accepted.
func TestHostileCallerIsBoundedAndOthersGoOn(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{MaxRegistrations: 200, RegisterRate: 50, RegisterBurst: 100})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)

	good := register(t, ctx, api, "good", &pb.RegisterRequest{TtlSeconds: 30})
	status0, err := c.etcd.Status(ctx, c.etcd.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}

	huge := strings.Repeat("h", 1500*1000)
	for i := range 10 {
		_, err := api.Register(ctx, &pb.RegisterRequest{Name: fmt.Sprintf("hostile-big-%d", i), HolderHost: huge})
		wantRefused(t, "register with a 1.5 MB host", err, codes.InvalidArgument, apierr.ReasonInvalid)
	}
	_, err = api.Register(ctx, &pb.RegisterRequest{Name: "hostile-edge", HolderHost: strings.Repeat("h", registry.MaxHolderHost+1)})
	wantRefused(t, "register with a 256-byte host", err, codes.InvalidArgument, apierr.ReasonInvalid)

	// The flood: at most 2,000 attempts or 10 s, whichever comes first.
	done := make(chan struct{})
	accepted, limited := 0, 0
	go func() {
		defer close(done)
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
			_, err := api.Register(ctx, &pb.RegisterRequest{Name: fmt.Sprintf("hostile-%d", i), TtlSeconds: 86400, HolderHost: strings.Repeat("x", registry.MaxHolderHost)})
			switch apierr.ReasonOf(err) {
			case "":
				accepted++
			case apierr.ReasonExhausted:
				limited++
			default:
				t.Errorf("flood registration %d: %v", i, err)
				return
			}
		}
	}()
	submitted := 0
	for flooding := true; flooding; {
		_, err := api.Submit(ctx, &pb.SubmitRequest{Name: "good", Incarnation: good.Incarnation, Ops: []*pb.Op{setOp("good", strconv.Itoa(submitted))}})
		if err != nil {
			t.Fatalf("the other caller's submission %d during the flood: %v", submitted, err)
		}
		submitted++
		select {
		case <-done:
			flooding = false
		default:
		}
	}
	if accepted > 200 {
		t.Errorf("%d flood registrations accepted, over the node's cap of 200", accepted)
	}
	if limited == 0 {
		t.Error("no flood registration was refused RESOURCE_EXHAUSTED")
	}
	status1, err := c.etcd.Status(ctx, c.etcd.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	// 200 records of under 512 bytes, the other caller's batches and
	// etcd's own pages: far under 4 MB, where ten 1.5 MB hosts alone took
	// 22.5 MB.
	const bound = 4 << 20
	if grown := status1.DbSize - status0.DbSize; grown > bound {
		t.Errorf("etcd's database grew %d bytes during the flood, over %d", grown, bound)
	}
	t.Logf("flood: %d accepted, %d limited; other caller: %d submissions accepted; etcd db %d -> %d bytes",
		accepted, limited, submitted, status0.DbSize, status1.DbSize)

	// HTTP answers a limit with 429 and Retry-After.
	res := post(t, ctx, n.Addr, "/v1/register", map[string]any{"name": "hostile-http"})
	if res.Code != http.StatusTooManyRequests || res.Reason() != apierr.ReasonExhausted {
		t.Errorf("HTTP register over the limits: %d %s, want 429 RESOURCE_EXHAUSTED", res.Code, res.Raw)
	}
}

// TestSlowAndIdleConnectionsAreClosed holds a connection that sends its
// declared body a byte at a time and an idle keep-alive connection: both
// are closed by the node within its read and idle timeouts, while a
// WaitApplied longer than both is answered.
func TestSlowAndIdleConnectionsAreClosed(t *testing.T) {
	c := startCluster(t)
	cfg := apiserver.Config{ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second}
	n := startAPI(t, c.etcd, cfg)
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)

	closedWithin := func(what string, conn net.Conn, within time.Duration) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(within))
		_, err := io.Copy(io.Discard, conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%s: still open after %v", what, within)
		}
	}
	slow, err := net.Dial("tcp", n.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /v1/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	go func() {
		for i := 0; i < 30; i++ {
			if _, err := slow.Write([]byte(" ")); err != nil {
				return
			}
			time.Sleep(500 * time.Millisecond) // the slow body itself, not a wait for an event
		}
	}()
	closedWithin("slow body", slow, 20*time.Second)

	idle, err := net.Dial("tcp", n.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
	closedWithin("idle keep-alive connection", idle, 20*time.Second)

	// A wait longer than every timeout above is answered, not cut.
	start := time.Now()
	_, err = api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: "999999999", TimeoutMs: 5000})
	wantRefused(t, "a 5 s wait for a token far ahead", err, codes.DeadlineExceeded, apierr.ReasonTimeout)
	if time.Since(start) < 5*time.Second {
		t.Fatalf("the wait ended after %v, before its own 5 s", time.Since(start))
	}
	res := post(t, ctx, n.Addr, "/v1/wait-applied", map[string]any{"token": "999999999", "timeout_ms": 5000})
	if res.Reason() != apierr.ReasonTimeout {
		t.Fatalf("HTTP wait of 5 s: %d %s, want TIMEOUT", res.Code, res.Raw)
	}
}

// grpcConn dials addr in plain text; the test closes it, or its cleanup.
func grpcConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestNoSpaceIsSurfaced raises etcd's NOSPACE alarm (as etcd does when its
// database reaches its quota): a submission is refused NO_SPACE, with
// nothing written, and a node's readiness names the alarm; once the alarm
// is disarmed, both recover.
func TestNoSpaceIsSurfaced(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	reg := register(t, ctx, api, "spacious", &pb.RegisterRequest{TtlSeconds: 30})

	checker, err := health.New(health.Config{
		Election: &election.Observer{}, Stats: &applier.Stats{}, Memcached: []string{c.mc.Addr},
		Etcd: c.etcd, AlarmInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); checker.Run(hctx) }()
	t.Cleanup(func() { stop(); <-done })

	st, err := c.etcd.Status(ctx, c.etcd.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	alarm := &etcdserverpb.AlarmRequest{Action: etcdserverpb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: etcdserverpb.AlarmType_NOSPACE}
	if _, err := etcdserverpb.NewMaintenanceClient(c.etcd.ActiveConnection()).Alarm(ctx, alarm); err != nil {
		t.Fatalf("raise NOSPACE: %v", err)
	}
	disarmed := false
	disarm := func() {
		if !disarmed {
			disarmed = true
			alarm.Action = etcdserverpb.AlarmRequest_DEACTIVATE
			if _, err := etcdserverpb.NewMaintenanceClient(c.etcd.ActiveConnection()).Alarm(context.Background(), alarm); err != nil {
				t.Errorf("disarm NOSPACE: %v", err)
			}
		}
	}
	t.Cleanup(disarm)

	_, err = api.Submit(ctx, &pb.SubmitRequest{Name: "spacious", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("space", "1")}})
	wantRefused(t, "submit under NOSPACE", err, codes.ResourceExhausted, apierr.ReasonNoSpace)
	if n := pendingKeys(t, ctx, c.etcd); n != 0 {
		t.Fatalf("%d batches stored under NOSPACE", n)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return checker.NoSpace() && strings.Contains(checker.Ready().String(), "fail etcd-space: NOSPACE alarm")
	}, "readiness names the NOSPACE alarm")

	disarm()
	testenv.Eventually(t, 10*time.Second, func() bool {
		return !checker.NoSpace() && strings.Contains(checker.Ready().String(), "ok etcd-space")
	}, "readiness recovers once the alarm is disarmed")
	if _, err := api.Submit(ctx, &pb.SubmitRequest{Name: "spacious", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("space", "2")}}); err != nil {
		t.Fatalf("submit after the alarm was disarmed: %v", err)
	}
}

// TestOldConnectionsAreClosedGracefully checks MaxConnectionAge: past it,
// an HTTP/1.1 answer says Connection: close, and an HTTP/2 connection is
// ended by GOAWAY, the next request going on a new connection; every
// request is answered.
func TestOldConnectionsAreClosedGracefully(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{MaxConnectionAge: time.Second})
	ctx := testenv.Ctx(t, 30*time.Second)
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{}
		if h2 {
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
		hc := &http.Client{Transport: tr}
		conns := map[string]bool{}
		status := func() (closed bool) {
			req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				GotConn: func(info httptrace.GotConnInfo) { conns[info.Conn.LocalAddr().String()] = true },
			}), http.MethodGet, "http://"+n.Addr+"/v1/status", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("h2=%v: status: %v", h2, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("h2=%v: status answered %d", h2, resp.StatusCode)
			}
			return resp.Close
		}
		status()
		// Past the age (and its jitter of a tenth), the connection is
		// closed: by its answer's header over HTTP/1.1, by GOAWAY over
		// HTTP/2, and the client goes on over a new one.
		testenv.Eventually(t, 15*time.Second, func() bool {
			closed := status()
			return (!h2 && closed) || (h2 && len(conns) >= 2)
		}, "h2=%v: a connection older than MaxConnectionAge is closed", h2)
		status()
		tr.CloseIdleConnections()
	}
}
