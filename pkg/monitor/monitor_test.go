package monitor_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/monitor"
)

// fixed answers the checks with fixed reports.
type fixed struct{ live, healthy, ready, apiReady health.Report }

func (f fixed) Live() health.Report     { return f.live }
func (f fixed) Health() health.Report   { return f.healthy }
func (f fixed) Ready() health.Report    { return f.ready }
func (f fixed) APIReady() health.Report { return f.apiReady }

// serve starts a monitor for cfg on a free port; it is stopped when the
// test ends, and Serve must then return nil.
func serve(t *testing.T, cfg monitor.Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	srv, err := monitor.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v after its context ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return "http://" + srv.Addr().String()
}

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestRoutes(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "coordinator_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	checks := fixed{
		healthy: health.Report{OK: true, Checks: []health.Check{{Name: "etcd", OK: true, Detail: "answered 1ms ago"}}},
		ready: health.Report{Checks: []health.Check{
			{Name: "lease", OK: true, Detail: "valid for 4s"},
			{Name: "memcached", Detail: "unreachable for 11s, over 10s"},
		}},
		live:     health.Report{OK: true, Checks: []health.Check{{Name: "loop", OK: true, Detail: "went round 1s ago"}}},
		apiReady: health.Report{OK: true, Checks: []health.Check{{Name: "etcd", OK: true, Detail: "answered 2ms ago"}}},
	}
	url := serve(t, monitor.Config{Gatherer: reg, Checks: checks})

	code, ctype, body := get(t, url+"/healthz")
	if code != http.StatusOK || body != "ok etcd: answered 1ms ago\n" || !strings.HasPrefix(ctype, "text/plain") {
		t.Errorf("/healthz = %d %q %q", code, ctype, body)
	}
	code, _, body = get(t, url+"/readyz")
	if code != http.StatusServiceUnavailable || body != "ok lease: valid for 4s\nfail memcached: unreachable for 11s, over 10s\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	code, _, body = get(t, url+"/readyz/applier")
	if code != http.StatusServiceUnavailable || body != "ok lease: valid for 4s\nfail memcached: unreachable for 11s, over 10s\n" {
		t.Errorf("/readyz/applier = %d %q", code, body)
	}
	code, _, body = get(t, url+"/readyz/api")
	if code != http.StatusOK || body != "ok etcd: answered 2ms ago\n" {
		t.Errorf("/readyz/api = %d %q", code, body)
	}
	code, _, body = get(t, url+"/livez")
	if code != http.StatusOK || body != "ok loop: went round 1s ago\n" {
		t.Errorf("/livez = %d %q", code, body)
	}
	code, _, body = get(t, url+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "# HELP coordinator_test_total A test counter.") ||
		!strings.Contains(body, "coordinator_test_total 3") {
		t.Errorf("/metrics = %d %q", code, body)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/nope"} {
		if code, _, _ := get(t, url+p); code != http.StatusNotFound {
			t.Errorf("%s without pprof = %d, want 404", p, code)
		}
	}
}

func TestPprofWhenEnabled(t *testing.T) {
	url := serve(t, monitor.Config{EnablePprof: true})
	code, _, body := get(t, url+"/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d", code)
	}
	if code, _, _ := get(t, url+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK {
		t.Errorf("/debug/pprof/goroutine = %d", code)
	}
	// Neither metrics nor checks were given.
	for _, p := range []string{"/metrics", "/livez", "/healthz", "/readyz", "/readyz/api", "/readyz/applier"} {
		if code, _, _ := get(t, url+p); code != http.StatusNotFound {
			t.Errorf("%s = %d, want 404", p, code)
		}
	}
}

func TestListenErrors(t *testing.T) {
	for _, cfg := range []monitor.Config{{}, {Addr: "nocolon"}, {Addr: ":1", ShutdownTimeout: -1}} {
		if _, err := monitor.Listen(cfg); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("Listen(%+v) = %v, want ErrBadConfig", cfg, err)
		}
	}
	srv, err := monitor.Listen(monitor.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := monitor.Listen(monitor.Config{Addr: srv.Addr().String()}); err == nil || errors.Is(err, config.ErrBadConfig) {
		t.Errorf("Listen on a taken port = %v, want a listen error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Serve(ctx); err != nil {
		t.Errorf("Serve with an ended context = %v", err)
	}
}
