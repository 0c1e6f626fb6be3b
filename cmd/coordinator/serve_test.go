package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
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

// An API that listens beyond loopback without client certificates is
// logged at WARN and shown by coordinator_api_insecure_listener 1; on
// loopback, or with client certificates, neither. The test binds 0.0.0.0
// but talks to loopback only.
func TestServeWarnsOfAnInsecureAPIListener(t *testing.T) {
	e := startEtcd(t)
	mc := testenv.StartMemcached(t)
	ca := testcerts.NewCA(t, "api")
	server := ca.Server("node")
	mtls := []string{"--api-cert", server.CertFile, "--api-key", server.KeyFile, "--api-client-ca", ca.CertFile}
	for i, tc := range []struct {
		listen   string
		extra    []string
		insecure bool
	}{
		{"0.0.0.0:0", nil, true},
		{"127.0.0.1:0", nil, false},
		{"0.0.0.0:0", []string{"--api-cert", server.CertFile, "--api-key", server.KeyFile}, true},
		{"0.0.0.0:0", mtls, false},
	} {
		name := fmt.Sprintf("%s %s", tc.listen, strings.Join(tc.extra, " "))
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			httpAddr := ln.Addr().String()
			ln.Close() // serve listens there itself
			ctx, cancel := context.WithCancel(context.Background())
			var stderr testenv.SyncBuffer
			done := make(chan int, 1)
			args := e.args(append([]string{"serve", "--memcached", mc.Addr, "--node-id", "insecure-" + strconv.Itoa(i),
				"--namespace", "insecure-" + strconv.Itoa(i), "--lease-ttl", "2s", "--http-listen", httpAddr,
				"--log-format", "json", "--api-listen", tc.listen}, tc.extra...)...)
			go func() { done <- run(ctx, args, strings.NewReader(""), io.Discard, &stderr) }()
			defer func() {
				cancel()
				select {
				case code := <-done:
					if code != exitOK {
						t.Errorf("%s: serve exited %d:\n%s", name, code, stderr.String())
					}
				case <-time.After(30 * time.Second):
					t.Errorf("%s: serve did not stop", name)
				}
			}()
			var gauge string
			testenv.Eventually(t, 30*time.Second, func() bool {
				resp, err := http.Get("http://" + httpAddr + "/metrics")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				for line := range strings.SplitSeq(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "coordinator_api_insecure_listener "); ok {
						gauge = v
						return true
					}
				}
				return false
			}, "%s: no coordinator_api_insecure_listener in /metrics; stderr:\n%s", name, stderr.String())
			want := map[bool]string{false: "0", true: "1"}[tc.insecure]
			if gauge != want {
				t.Errorf("%s: coordinator_api_insecure_listener %s, want %s", name, gauge, want)
			}
			var warned bool
			sc := bufio.NewScanner(strings.NewReader(stderr.String()))
			for sc.Scan() {
				var rec map[string]any
				if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["level"] == "WARN" &&
					strings.Contains(fmt.Sprint(rec["msg"]), "caller API listens beyond loopback without client certificates") {
					warned = true
					// Go binds 0.0.0.0 as [::] where the host has IPv6.
					if addr := fmt.Sprint(rec["addr"]); !strings.HasPrefix(addr, "0.0.0.0:") && !strings.HasPrefix(addr, "[::]:") {
						t.Errorf("%s: the warning names %q", name, addr)
					}
				}
			}
			if warned != tc.insecure {
				t.Errorf("%s: warned %v, want %v; stderr:\n%s", name, warned, tc.insecure, stderr.String())
			}
		})
	}
}

// loopbackOnly tells loopback listeners from those on other or every
// interface.
func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:80": true, "127.1.2.3:80": true, "[::1]:80": true,
		"0.0.0.0:80": false, "[::]:80": false, "10.0.0.1:80": false, "[fe80::1]:80": false,
	} {
		tcp, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := loopbackOnly(tcp); got != want {
			t.Errorf("loopbackOnly(%s) = %v, want %v", addr, got, want)
		}
	}
	if loopbackOnly(&net.UnixAddr{Name: "/tmp/x", Net: "unix"}) {
		t.Error("a unix socket counts as loopback")
	}
}
