package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
)

// With gRPC and HTTP/JSON on listeners of their own, each serves its own
// protocol: the caller API through gRPC (a registration kept alive on its
// stream, a batch applied to memcached), HTTP/JSON on the other, and a
// gRPC call to the HTTP/JSON listener is UNIMPLEMENTED, naming where gRPC
// is served.
func TestSplitListenersServeTheirOwnProtocol(t *testing.T) {
	c := startCluster(t)
	n := startSplitAPI(t, c.etcd, apiserver.Config{})
	if n.Addr == n.HTTPAddr {
		t.Fatalf("one address for both: %s", n.Addr)
	}
	ctx := testenv.Ctx(t, 60*time.Second)
	api := grpcClient(t, n.Addr, nil)

	reg := register(t, ctx, api, "split", &pb.RegisterRequest{TtlSeconds: 5})
	ka, err := api.KeepAlive(ctx, &pb.KeepAliveRequest{Name: "split", Incarnation: reg.Incarnation, LeaseId: reg.LeaseId})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ka.Recv(); err != nil || r.TtlSeconds <= 0 {
		t.Fatalf("keep-alive stream: %v, %v", r, err)
	}
	res, err := api.Submit(ctx, &pb.SubmitRequest{Name: "split", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("split", "grpc")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: res.Token}); err != nil {
		t.Fatal(err)
	}
	if v := readKey(t, c.mc.Addr, "split"); v != "grpc" {
		t.Fatalf("split = %q, want grpc", v)
	}

	if r := post(t, ctx, n.HTTPAddr, "/v1/register", map[string]any{"name": "split-http", "ttl_seconds": 5}); r.Code != http.StatusOK {
		t.Fatalf("HTTP/JSON register: %d %s", r.Code, r.Raw)
	}
	_, err = grpcClient(t, n.HTTPAddr, nil).Register(ctx, &pb.RegisterRequest{Name: "wrong-port"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "gRPC address") {
		t.Fatalf("gRPC call to the HTTP/JSON listener: %v, want UNIMPLEMENTED naming the gRPC address", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Addr+"/v1/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := httpClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("HTTP/1.1 to the gRPC listener answered %s", resp.Status)
	}

	// A new registration of the name ends the stream of the old one.
	register(t, ctx, api, "split", &pb.RegisterRequest{TtlSeconds: 5})
	for {
		_, err := ka.Recv()
		if err == nil {
			continue
		}
		wantRefused(t, "the superseded incarnation's stream", err, codes.Aborted, apierr.ReasonSuperseded)
		break
	}
}

// gRPC's own server keeps the limits of Config: a call whose request
// never completes is ended by WriteTimeout, a connection with no call by
// IdleTimeout, an old one by MaxConnectionAge (GOAWAY, the client going on
// over a new connection), headers over 64 KiB are refused, while a
// WaitApplied longer than all of them is answered.
func TestGRPCServerBoundsCallsAndConnections(t *testing.T) {
	c := startCluster(t)
	n := startSplitAPI(t, c.etcd, apiserver.Config{WriteTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second, MaxConnectionAge: 2 * time.Second})
	ctx := testenv.Ctx(t, 90*time.Second)

	// A Submit whose message declares 100 bytes and sends 2.
	slow := dialH2(t, n.Addr)
	slow.headers(t, 1, "/coordinator.v1.Coordinator/Submit")
	if err := slow.fr.WriteData(1, false, []byte{0, 0, 0, 0, 100, 1, 2}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if ended := slow.streamEnd(t, 1, 20*time.Second); ended == "" {
		t.Fatal("a call whose message never completes is still open after 20 s")
	} else {
		t.Logf("unfinished call ended after %v by %s", time.Since(start).Round(time.Millisecond), ended)
	}

	// A connection that never calls.
	idle := dialH2(t, n.Addr)
	if !idle.closedOrGoaway(t, 20*time.Second) {
		t.Fatal("a connection with no call is still open after 20 s")
	}

	// A caller calling on and on moves to new connections as its old ones
	// age, and every call is answered.
	var dials atomic.Int32
	conn, err := grpc.NewClient(n.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	api := pb.NewCoordinatorClient(conn)
	testenv.Eventually(t, 30*time.Second, func() bool {
		if _, err := api.Status(ctx, &pb.StatusRequest{}); err != nil {
			t.Fatalf("status on an aging connection: %v", err)
		}
		return dials.Load() >= 2
	}, "the caller's connection is replaced past MaxConnectionAge")

	// Headers over 64 KiB are refused, and the node serves on.
	big := metadata.AppendToOutgoingContext(ctx, "x-padding", strings.Repeat("x", 100<<10))
	if _, err := api.Status(big, &pb.StatusRequest{}); err == nil {
		t.Fatal("a call with 100 KiB of headers was served")
	}
	if _, err := api.Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Fatalf("status after refused headers: %v", err)
	}

	start = time.Now()
	_, err = api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: "999999999", TimeoutMs: 5000})
	wantRefused(t, "a 5 s wait for a token far ahead", err, codes.DeadlineExceeded, apierr.ReasonTimeout)
	if time.Since(start) < 5*time.Second {
		t.Fatalf("the wait ended after %v, before its own 5 s", time.Since(start))
	}
}

// h2Conn is a raw HTTP/2 client connection, for requests no gRPC client
// would make.
type h2Conn struct {
	conn net.Conn
	fr   *http2.Framer
}

// dialH2 opens a plain HTTP/2 connection to addr (preface and settings
// sent); the test closes it.
func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &h2Conn{conn: conn, fr: fr}
}

// headers opens stream id as a gRPC call of method.
func (h *h2Conn) headers(t *testing.T, id uint32, method string) {
	t.Helper()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "coordinator"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// streamEnd reads frames until stream id ends, and says how: its
// trailers' grpc-status, a reset, the connection closed, or for id 0 a
// GOAWAY; "" if it did not end within d.
func (h *h2Conn) streamEnd(t *testing.T, id uint32, d time.Duration) string {
	t.Helper()
	_ = h.conn.SetReadDeadline(time.Now().Add(d))
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return ""
			}
			return "connection closed (" + err.Error() + ")"
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = h.fr.WritePing(true, f.Data)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "RST_STREAM " + f.ErrCode.String()
			}
		case *http2.HeadersFrame:
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			if f.StreamID == id && f.StreamEnded() {
				for _, hf := range fields {
					if hf.Name == "grpc-status" {
						return "grpc-status " + hf.Value
					}
				}
				return "trailers without grpc-status"
			}
		case *http2.GoAwayFrame:
			if id == 0 {
				return "GOAWAY"
			}
			// The streams under way go on past a GOAWAY.
		}
	}
}

// closedOrGoaway reports whether the server closed the connection or sent
// GOAWAY within d.
func (h *h2Conn) closedOrGoaway(t *testing.T, d time.Duration) bool {
	t.Helper()
	return h.streamEnd(t, 0, d) != ""
}
