package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/health"
)

// freeAddr returns a free loopback host:port for serve to listen on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// One node served with --api-listen and --http-listen, as an operator's
// platform sees it: the gRPC health statuses and reflection on the API
// port, the OpenAPI document and every route it names, and a /metrics that
// has every metric deploy/prometheus's rules and deploy/grafana's
// dashboard name. With memcached away, the API stays ready (HTTP and gRPC)
// and the applier does not.
func TestServeProbesDiscoveryAndMetrics(t *testing.T) {
	e := startEtcd(t)
	mc := testenv.StartMemcached(t)
	apiAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testenv.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, e.args("serve", "--memcached", mc.Addr, "--node-id", "observed", "--lease-ttl", "2s",
			"--http-listen", httpAddr, "--api-listen", apiAddr), strings.NewReader(""), io.Discard, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("serve exited %d:\n%s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	mon := "http://" + httpAddr
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, body := get(mon + "/readyz/applier")
		return strings.Contains(body, "ok role: leader")
	}, "serve never was ready as the leader")

	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	grpcStatus := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}
	waitGRPC := func(svc string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() bool { return grpcStatus(svc) == want },
			"gRPC health of %q never was %s (last: %s)", svc, want, grpcStatus(svc))
	}
	for _, svc := range []string{"", health.ServiceAPI, health.ServiceApplier} {
		waitGRPC(svc, healthpb.HealthCheckResponse_SERVING)
	}

	t.Run("reflection", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = stream.CloseSend() }()
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
		}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"coordinator.v1.Coordinator", "grpc.health.v1.Health"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %q, without %s", names, want)
			}
		}
	})

	t.Run("openapi", func(t *testing.T) {
		api := "http://" + apiAddr
		code, body := get(api + "/openapi.json")
		if code != http.StatusOK || body != string(pb.OpenAPI) {
			t.Fatalf("/openapi.json = %d, not the committed document: %.200q", code, body)
		}
		var doc struct {
			Paths map[string]map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(pb.OpenAPI, &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.Paths) == 0 {
			t.Fatal("the OpenAPI document names no paths")
		}
		// noRoute reports whether the gateway answered method on path as a
		// path or method it has no route for; a call's own refusals carry
		// their reasons.
		noRoute := func(method, path string) (bool, string) {
			var reqBody io.Reader
			if method == http.MethodPost {
				reqBody = strings.NewReader("{}")
			}
			req, err := http.NewRequest(method, api+path, reqBody)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var st struct {
				Message string `json:"message"`
			}
			_ = json.Unmarshal(b, &st)
			return resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented ||
					st.Message == http.StatusText(http.StatusNotFound) || st.Message == http.StatusText(http.StatusMethodNotAllowed),
				resp.Status + " " + string(b)
		}
		// The check tells a missing route from a present one.
		for _, c := range [][2]string{{http.MethodGet, "/v1/no-such-route"}, {http.MethodDelete, "/v1/status"}} {
			if missing, got := noRoute(c[0], c[1]); !missing {
				t.Errorf("%s %s = %s, taken for a route", c[0], c[1], got)
			}
		}
		for path, methods := range doc.Paths {
			for method := range methods {
				method = strings.ToUpper(method)
				if missing, got := noRoute(method, path); missing {
					t.Errorf("%s %s = %s: no route", method, path, got)
				}
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		// A call of each kind first, for the request metrics' samples.
		if _, err := pb.NewCoordinatorClient(conn).Status(ctx, &pb.StatusRequest{}); err != nil {
			t.Fatal(err)
		}
		get("http://" + apiAddr + "/v1/status")
		code, body := get(mon + "/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics = %d", code)
		}
		for _, want := range []string{
			"\ncoordinator_build_info{",
			`coordinator_memcached_up{server="` + mc.Addr + `"} 1`,
			// Every per-server counter from the start, at 0.
			`coordinator_memcached_errors_total{kind="connection",server="` + mc.Addr + `"} 0`,
			`coordinator_memcached_restarts_total{server="` + mc.Addr + `"} 0`,
			`grpc_server_handled_total{grpc_code="OK",grpc_method="Status",grpc_service="coordinator.v1.Coordinator",grpc_type="unary"} 1`,
			`coordinator_api_http_requests_total{code="200",method="GET",route="/v1/status"} `,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
		exposed := map[string]bool{}
		for _, line := range strings.Split(body, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
				exposed[f[2]] = true
			}
		}
		for _, name := range deployedMetrics(t) {
			if !exposed[name] {
				t.Errorf("deploy/ names metric %s, which the node does not expose", name)
			}
		}
	})

	mc.Stop()
	testenv.Eventually(t, 30*time.Second, func() bool {
		code, _ := get(mon + "/readyz/applier")
		return code == http.StatusServiceUnavailable
	}, "/readyz/applier never failed with memcached away")
	waitGRPC(health.ServiceApplier, healthpb.HealthCheckResponse_NOT_SERVING)
	if code, body := get(mon + "/readyz/api"); code != http.StatusOK {
		t.Errorf("/readyz/api with memcached away = %d %q", code, body)
	}
	for _, svc := range []string{"", health.ServiceAPI} {
		if st := grpcStatus(svc); st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("gRPC health of %q with memcached away = %s", svc, st)
		}
	}
}

// metricName matches the metric names PromQL expressions in deploy/ use.
var metricName = regexp.MustCompile(`\b(?:coordinator|grpc_server|process)_[a-z0-9_]+`)

// deployedMetrics returns the metric families the alert rules and the
// dashboard name (a histogram's _bucket, _sum and _count series by its
// family's name).
func deployedMetrics(t *testing.T) []string {
	t.Helper()
	var text []byte
	for _, p := range []string{"../../deploy/prometheus/alerts.yaml", "../../deploy/grafana/coordinator.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		text = append(text, b...)
	}
	var names []string
	for _, m := range metricName.FindAll(text, -1) {
		name := string(bytes.TrimSuffix(bytes.TrimSuffix(bytes.TrimSuffix(m, []byte("_bucket")), []byte("_sum")), []byte("_count")))
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) < 10 {
		t.Fatalf("deploy/ names only %q", names)
	}
	return names
}
