package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// cluster is an etcd, a memcached and a coordinator node.
type cluster struct {
	etcd *clientv3.Client
	mc   *testenv.Memcached
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: keyspace.MustNew(keyspace.DefaultNamespace), NodeID: "n1", Memcached: []string{mc.Addr}})
	return &cluster{etcd: cli, mc: mc}
}

// apiNode is one API server on free loopback ports: Addr serves gRPC
// (and HTTP/JSON, when HTTPAddr is the same address), HTTPAddr HTTP/JSON.
type apiNode struct {
	Addr     string
	HTTPAddr string
	stop     context.CancelFunc
	done     chan error
	serves   int
	stopped  bool
}

// startAPI serves the API, gRPC and HTTP/JSON on one port (Serve), on
// 127.0.0.1:0 with cfg (Etcd filled in); it is stopped when the test ends.
func startAPI(t *testing.T, cli *clientv3.Client, cfg apiserver.Config) *apiNode {
	t.Helper()
	srv := newAPIServer(t, cli, cfg)
	return serveAPI(t, srv.Serve)
}

// startSplitAPI serves the API as `serve --api-http-listen` does: gRPC
// alone on gRPC's own server (ServeGRPC) at Addr, HTTP/JSON (ServeJSON)
// at HTTPAddr.
func startSplitAPI(t *testing.T, cli *clientv3.Client, cfg apiserver.Config) *apiNode {
	t.Helper()
	srv := newAPIServer(t, cli, cfg)
	return serveAPI(t, srv.ServeGRPC, srv.ServeJSON)
}

func newAPIServer(t *testing.T, cli *clientv3.Client, cfg apiserver.Config) *apiserver.Server {
	t.Helper()
	cfg.Etcd = cli
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger()
	}
	srv, err := apiserver.New(cfg)
	if err != nil {
		t.Fatalf("apiserver.New: %v", err)
	}
	return srv
}

// serveAPI runs each serve on a listener of its own on 127.0.0.1:0: the
// first is Addr, the last HTTPAddr.
func serveAPI(t *testing.T, serves ...func(context.Context, net.Listener) error) *apiNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &apiNode{stop: cancel, done: make(chan error, len(serves))}
	for _, serve := range serves {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if n.Addr == "" {
			n.Addr = lis.Addr().String()
		}
		n.HTTPAddr = lis.Addr().String()
		n.serves++
		go func() { n.done <- serve(ctx, lis) }()
	}
	t.Cleanup(func() { n.Stop(t) })
	return n
}

// Stop stops the server and waits for its serves to return.
func (n *apiNode) Stop(t *testing.T) {
	t.Helper()
	if n.stopped {
		return
	}
	n.stopped = true
	n.stop()
	deadline := time.After(20 * time.Second)
	for range n.serves {
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-deadline:
			t.Errorf("Serve did not return within 20s")
			return
		}
	}
}

// grpcClient dials addr; creds nil means plain TCP.
func grpcClient(t *testing.T, addr string, tlsCfg *tls.Config) pb.CoordinatorClient {
	t.Helper()
	cr := insecure.NewCredentials()
	if tlsCfg != nil {
		cr = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(cr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewCoordinatorClient(conn)
}

// reason returns the ErrorInfo reason and code of a gRPC error.
func reason(err error) (codes.Code, string) {
	return status.Code(err), apierr.ReasonOf(err)
}

// wantRefused fails unless err has code and reason.
func wantRefused(t *testing.T, what string, err error, code codes.Code, why string) {
	t.Helper()
	if c, r := reason(err); c != code || r != why {
		t.Fatalf("%s: got %v (code %v, reason %q), want code %v reason %q", what, err, c, r, code, why)
	}
}

// register registers name through c.
func register(t *testing.T, ctx context.Context, c pb.CoordinatorClient, name string, req *pb.RegisterRequest) *pb.RegisterResponse {
	t.Helper()
	if req == nil {
		req = &pb.RegisterRequest{}
	}
	req.Name = name
	r, err := c.Register(ctx, req)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return r
}

// setOp is a set of key to text.
func setOp(key, text string) *pb.Op {
	return &pb.Op{Op: &pb.Op_Set{Set: &pb.SetOp{Key: key, Data: &pb.SetOp_Text{Text: text}}}}
}

// readKey reads key from memcached; "" when absent.
func readKey(t *testing.T, addr, key string) string {
	t.Helper()
	it, err := memcache.New(addr).Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return ""
	}
	if err != nil {
		t.Fatalf("memcached get %s: %v", key, err)
	}
	return string(it.Value)
}

// httpClient is the tests' HTTP client; TestMain closes its idle
// connections before looking for leaked goroutines.
var httpClient = &http.Client{Transport: &http.Transport{}}

// httpResult is an HTTP/JSON answer.
type httpResult struct {
	Code int
	Body map[string]any
	Raw  string
}

// Reason is the ErrorInfo reason of an error body.
func (r httpResult) Reason() string {
	details, _ := r.Body["details"].([]any)
	for _, d := range details {
		if m, ok := d.(map[string]any); ok && m["domain"] == apierr.Domain {
			s, _ := m["reason"].(string)
			return s
		}
	}
	return ""
}

// post sends body (a string, or a value to encode) to the HTTP/JSON API.
func post(t *testing.T, ctx context.Context, addr, path string, body any) httpResult {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = b
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

// get sends a GET to the HTTP/JSON API.
func get(t *testing.T, ctx context.Context, addr, path string) httpResult {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) httpResult {
	t.Helper()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := httpResult{Code: resp.StatusCode, Raw: string(raw)}
	_ = json.Unmarshal(raw, &res.Body)
	return res
}

// pendingKeys counts the keys under the namespace's ops prefix.
func pendingKeys(t *testing.T, ctx context.Context, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(ctx, keyspace.MustNew(keyspace.DefaultNamespace).OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// setOpGo is one set of key to value as pkg/ops operations.
func setOpGo(key, value string) []ops.Op { return []ops.Op{ops.Set(key, []byte(value), 0)} }
