package api

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// serveNode starts `coordinator serve` against etcd with the API on a free
// port and returns the node and the API's address.
func serveNode(t *testing.T, id string, endpoints []string, mcAddr string, extra ...string) (*harness.Node, string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	return startServe(t, id, endpoints, mcAddr, append([]string{"--api-listen", addr}, extra...)), addr
}

// serveSplitNode is serveNode with HTTP/JSON on a port of its own
// (--api-http-listen): it returns the gRPC address and the HTTP/JSON one.
func serveSplitNode(t *testing.T, id string, endpoints []string, mcAddr string, extra ...string) (n *harness.Node, grpcAddr, httpAddr string) {
	t.Helper()
	grpcAddr = "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	httpAddr = "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	n = startServe(t, id, endpoints, mcAddr, append([]string{"--api-listen", grpcAddr, "--api-http-listen", httpAddr}, extra...))
	return n, grpcAddr, httpAddr
}

// startServe starts `coordinator serve` with args and waits for its API.
func startServe(t *testing.T, id string, endpoints []string, mcAddr string, args []string) *harness.Node {
	t.Helper()
	n := harness.StartNode(t, harness.NodeOptions{ID: id, Endpoints: endpoints, Memcached: mcAddr, Extra: args})
	ctx := testenv.Ctx(t, 60*time.Second)
	if err := n.WaitOutput(ctx, "caller API listening"); err != nil {
		t.Fatalf("node %s: %v\n%s", id, err, n.Output())
	}
	return n
}

// A caller streaming through node A while A is killed (kill -9 of a real
// serve process) carries on through node B with the same incarnation, and
// nothing acknowledged is lost.
//
// Node A serves gRPC through gRPC's own server (--api-http-listen), node B
// beside HTTP/JSON: the caller moves between the two.
func TestServeAPIAndKilledNode(t *testing.T) {
	srv, _ := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	a, addrA, _ := serveSplitNode(t, "a", srv.Endpoints(), mc.Addr)
	_, addrB := serveNode(t, "b", srv.Endpoints(), mc.Addr)
	moveScenario(t, mc.Addr, grpcClient(t, addrA, nil), grpcClient(t, addrB, nil), a.Kill)
}

// serve's API flags: TLS with client certificates, and per-name
// authorization by the certificate's subject, on one port and with
// HTTP/JSON on a port of its own (gRPC's own server making the handshake).
func TestServeAPIWithMutualTLSAuthorizesNames(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(map[bool]string{false: "one-port", true: "split"}[split], func(t *testing.T) { serveMutualTLS(t, split) })
	}
}

func serveMutualTLS(t *testing.T, split bool) {
	srv, _ := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	ca := testcerts.NewCA(t, "api")
	server, agent := ca.Server("node"), ca.Client("agent-a")
	tlsArgs := []string{"--api-cert", server.CertFile, "--api-key", server.KeyFile, "--api-client-ca", ca.CertFile}
	var addr, httpAddr string
	if split {
		_, addr, httpAddr = serveSplitNode(t, "a", srv.Endpoints(), mc.Addr, tlsArgs...)
	} else {
		_, addr = serveNode(t, "a", srv.Endpoints(), mc.Addr, tlsArgs...)
		httpAddr = addr
	}
	ctx := testenv.Ctx(t, 60*time.Second)

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(agent.CertFile, agent.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	api := grpcClient(t, addr, clientTLS)

	reg := register(t, ctx, api, "agent-a", nil)
	_, err = api.Register(ctx, &pb.RegisterRequest{Name: "agent-b"})
	wantRefused(t, "register a name the certificate does not allow", err, codes.PermissionDenied, apierr.ReasonPermissionDenied)
	_, err = api.Submit(ctx, &pb.SubmitRequest{Name: "agent-b", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("tls", "b")}})
	wantRefused(t, "submit as another name", err, codes.PermissionDenied, apierr.ReasonPermissionDenied)
	r, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent-a", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("tls", "a")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: r.Token}); err != nil {
		t.Fatal(err)
	}
	if v := readKey(t, mc.Addr, "tls"); v != "a" {
		t.Fatalf("tls = %q, want a", v)
	}

	// HTTPS with the same certificate: the same rules, as HTTP statuses.
	tr := &http.Transport{TLSClientConfig: clientTLS}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	postTLS := func(c *http.Client, body string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+httpAddr+"/v1/register", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	if code, body, err := postTLS(hc, `{"name":"agent-b"}`); err != nil || code != http.StatusForbidden || !strings.Contains(body, apierr.ReasonPermissionDenied) {
		t.Fatalf("HTTPS register agent-b: %d %s %v", code, body, err)
	}
	if code, body, err := postTLS(hc, `{"name":"agent-a","ttl_seconds":5}`); err != nil || code != http.StatusOK {
		t.Fatalf("HTTPS register agent-a: %d %s %v", code, body, err)
	}
	// Without a client certificate the handshake fails.
	bare := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(bare.CloseIdleConnections)
	if code, body, err := postTLS(&http.Client{Transport: bare}, `{"name":"agent-a"}`); err == nil {
		t.Fatalf("HTTPS without a client certificate answered: %d %s", code, body)
	}
}

// Misused API flags are usage errors: exit status 2, a message naming the
// flag, and no node started.
func TestServeAPIFlagMisuse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--api-cert", "c.pem", "--api-key", "k.pem"}, "--api-listen"},
		{[]string{"--api-listen", "127.0.0.1:0", "--api-cert", "c.pem"}, "--api-key"},
		{[]string{"--api-listen", "127.0.0.1:0", "--api-client-ca", "ca.pem"}, "--api-client-ca"},
		{[]string{"--api-listen", "nowhere"}, "--api-listen"},
		{[]string{"--api-listen", "127.0.0.1:99999"}, "--api-listen"},
		{[]string{"--api-http-listen", "127.0.0.1:0"}, "--api-listen"},
		{[]string{"--api-listen", "127.0.0.1:0", "--api-http-listen", "nowhere"}, "--api-http-listen"},
	} {
		_, stderr, code := harness.Run(t, nil, append([]string{"serve", "--endpoints", "http://127.0.0.1:1"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want exit 2 naming %s", tc.args, code, stderr, tc.want)
		}
	}
}
