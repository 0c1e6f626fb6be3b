package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestServeFlagUsageErrors(t *testing.T) {
	e := startEtcd(t)
	for _, c := range []struct {
		want string
		args []string
	}{
		{`--log-format must be text or json, not "yaml"`, []string{"serve", "--log-format", "yaml"}},
		{"--http-listen", []string{"serve", "--http-listen", "nocolon"}},
		{"--http-listen", []string{"serve", "--http-listen", "127.0.0.1:http"}},
		{"--http-listen", []string{"serve", "--http-listen", ":70000"}},
		{"--enable-pprof needs --http-listen", []string{"serve", "--enable-pprof"}},
	} {
		t.Run(strings.Join(c.args[1:], " "), func(t *testing.T) {
			e.assertUsageError(t, "coordinator serve", c.want, c.args...)
		})
	}
}

// serve --http-listen --log-format json: the node answers /readyz and
// /metrics, writes JSON lines, and stops on its context.
func TestServeHTTPListenAndJSONLogs(t *testing.T) {
	e := startEtcd(t)
	mc := testenv.StartMemcached(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // serve listens there itself
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testenv.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, e.args("serve", "--memcached", mc.Addr, "--node-id", "n1", "--lease-ttl", "2s",
			"--http-listen", addr, "--log-format", "json"), strings.NewReader(""), io.Discard, &stderr)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("serve exited %d:\n%s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(stop)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, body := get("/readyz")
		return strings.Contains(body, "ok role: leader")
	}, "serve never was ready as the leader")
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "\ncoordinator_is_leader 1\n") {
		t.Errorf("/metrics = %d without is_leader 1", code)
	}
	if code, _ := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --enable-pprof = %d", code)
	}
	stop()
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	msgs := map[string]bool{}
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("stderr line %q is not JSON: %v", sc.Text(), err)
		}
		msgs[rec["msg"].(string)] = true
	}
	for _, m := range []string{"node starting", "monitor listening", "became leader", "node stopped"} {
		if !msgs[m] {
			t.Errorf("no %q among the JSON lines:\n%s", m, stderr.String())
		}
	}
}
