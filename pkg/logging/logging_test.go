package logging_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/logging"
)

// lines parses every line of out as a JSON object.
func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		recs = append(recs, m)
	}
	return recs
}

func TestConfigValidate(t *testing.T) {
	for _, f := range []string{"", logging.FormatText, logging.FormatJSON} {
		cfg := logging.Config{Format: f}
		if err := cfg.Validate(); err != nil {
			t.Errorf("Format %q: %v", f, err)
		}
	}
	if _, err := logging.New(logging.Config{Format: "yaml"}); !errors.Is(err, config.ErrBadConfig) {
		t.Errorf("Format yaml: got %v, want ErrBadConfig", err)
	}
}

func TestFormats(t *testing.T) {
	var js, txt testenv.SyncBuffer
	lj, err := logging.New(logging.Config{Format: logging.FormatJSON, Output: &js, Level: slog.LevelWarn})
	if err != nil {
		t.Fatal(err)
	}
	lj.Info("dropped")
	lj.Warn("kept", "n", 3)
	recs := lines(t, js.String())
	if len(recs) != 1 || recs[0]["msg"] != "kept" || recs[0]["level"] != "WARN" || recs[0]["n"] != 3.0 {
		t.Errorf("json lines = %v", recs)
	}
	lt, err := logging.New(logging.Config{Output: &txt})
	if err != nil {
		t.Fatal(err)
	}
	lt.Info("hello", "k", "v")
	if got := txt.String(); !strings.Contains(got, "level=INFO msg=hello k=v") {
		t.Errorf("text line = %q", got)
	}
}

// The bridge hands zap entries to the slog handler: level mapping, the
// minimum level, fields, With fields, the logger name and errors.
func TestZapBridge(t *testing.T) {
	var out testenv.SyncBuffer
	h, err := logging.NewHandler(logging.Config{Format: logging.FormatJSON, Output: &out, Level: slog.LevelDebug})
	if err != nil {
		t.Fatal(err)
	}
	zl := logging.Zap(h, slog.LevelInfo).Named("etcd-client").With(zap.String("endpoint", "e1"))
	zl.Debug("below the bridge's minimum")
	zl.Info("info", zap.Int("n", 7), zap.Duration("took", 1500*time.Millisecond))
	zl.Warn("warn", zap.Error(errors.New("boom")), zap.Namespace("ns"), zap.Bool("inner", true))
	zl.Error("error")
	recs := lines(t, out.String())
	if len(recs) != 3 {
		t.Fatalf("got %d lines, want 3: %s", len(recs), out.String())
	}
	for i, want := range []string{"INFO", "WARN", "ERROR"} {
		if recs[i]["level"] != want || recs[i]["logger"] != "etcd-client" || recs[i]["endpoint"] != "e1" {
			t.Errorf("line %d = %v, want level %s with logger and endpoint", i, recs[i], want)
		}
	}
	if recs[0]["n"] != 7.0 || recs[0]["took"] != "1.5s" {
		t.Errorf("info fields = %v", recs[0])
	}
	if recs[1]["error"] != "boom" {
		t.Errorf("warn error field = %v", recs[1])
	}
	if ns, ok := recs[1]["ns"].(map[string]any); !ok || ns["inner"] != true {
		t.Errorf("warn namespace field = %v", recs[1]["ns"])
	}

	// A namespace given to With holds the later entries' fields too.
	var out2 testenv.SyncBuffer
	h2, err := logging.NewHandler(logging.Config{Format: logging.FormatJSON, Output: &out2})
	if err != nil {
		t.Fatal(err)
	}
	logging.Zap(h2, slog.LevelInfo).With(zap.String("a", "1"), zap.Namespace("req"), zap.String("id", "x")).Info("m", zap.Int("n", 2))
	rec := lines(t, out2.String())[0]
	if req, ok := rec["req"].(map[string]any); rec["a"] != "1" || !ok || req["id"] != "x" || req["n"] != 2.0 {
		t.Errorf("With namespace line = %v", rec)
	}
}

// The etcd client's own warnings, about an endpoint that does not answer,
// come out as JSON lines of the same handler.
func TestEtcdClientWarningsAsJSON(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there any more
	var out testenv.SyncBuffer
	h, err := logging.NewHandler(logging.Config{Format: logging.FormatJSON, Output: &out})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"http://" + dead}, DialTimeout: time.Second, Logger: logging.Zap(h, slog.LevelWarn),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "k"); err == nil {
		t.Fatal("a Get against nothing succeeded")
	}
	recs := lines(t, out.String())
	found := false
	for _, r := range recs {
		if r["level"] == "WARN" && r["msg"] != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no warning of the etcd client among %d JSON lines: %s", len(recs), out.String())
	}
	t.Logf("etcd client warning: %v", recs[0])
}

// A warning about a cancelled call (the etcd client's "retrying of unary
// invoker failed" for every call in flight when a node stops) is written at
// debug level, and dropped when debug is off; other warnings stay warnings.
func TestCancelledCallsAreDebug(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  []string
	}{
		{slog.LevelInfo, []string{"WARN"}},
		{slog.LevelDebug, []string{"DEBUG", "DEBUG", "WARN"}},
	} {
		var out testenv.SyncBuffer
		h, err := logging.NewHandler(logging.Config{Format: logging.FormatJSON, Output: &out, Level: tc.level})
		if err != nil {
			t.Fatal(err)
		}
		zl := logging.Zap(h, slog.LevelDebug)
		zl.Warn("retrying of unary invoker failed", zap.Error(status.Error(codes.Canceled, "context canceled")))
		zl.Warn("cancelled", zap.Error(fmt.Errorf("get: %w", context.Canceled)))
		zl.Warn("retrying of unary invoker failed", zap.Error(status.Error(codes.Unavailable, "connection refused")))
		recs := lines(t, out.String())
		var got []string
		for _, r := range recs {
			got = append(got, r["level"].(string))
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("handler at %v: levels %v, want %v\n%s", tc.level, got, tc.want, out.String())
		}
	}
}
