package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// hugeHost is the holder host of one registration of the listing tests:
// 1.5 MB, as a record written by something that does not bound holder hosts
// may hold.
var hugeHost = strings.Repeat("h", 1500000)

// storeRegistrations writes 10,000 registrations straight to etcd in the
// default namespace's layout, 128 to a transaction, under one lease;
// caller-04321's holder host is hugeHost.
func (e *env) storeRegistrations(t *testing.T) []string {
	t.Helper()
	ctx := testenv.Ctx(t, 60*time.Second)
	cli := e.client.Etcd()
	layout := keyspace.MustNew(keyspace.DefaultNamespace)
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 10000)
	for i := range names {
		names[i] = fmt.Sprintf("caller-%05d", i)
	}
	for chunk := range slices.Chunk(names, 128) {
		var puts []clientv3.Op
		for _, n := range chunk {
			host := "host-" + n
			if n == "caller-04321" {
				host = hugeHost
			}
			rec, err := json.Marshal(map[string]any{"host": host, "pid": 7, "started": time.Unix(0, 0).UTC(), "ttl_seconds": 3600})
			if err != nil {
				t.Fatal(err)
			}
			puts = append(puts, clientv3.OpPut(layout.Reg(n), string(rec), clientv3.WithLease(grant.ID)))
		}
		if _, err := cli.Txn(ctx).Then(puts...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// With 10,000 registrations, one with a 1.5 MB holder host, the table is a
// row per registration, every row bounded (the host cut with "…"), and the
// JSON holds the host whole.
func TestRegistrationsTableBounded(t *testing.T) {
	e := start(t)
	names := e.storeRegistrations(t)
	out := e.runOK(t, nil, "registrations")
	lines := harness.Lines(out)
	if len(lines) != len(names)+1 {
		t.Fatalf("%d lines, want a header and %d rows", len(lines), len(names))
	}
	for i, l := range lines {
		// Seven cells of at most 64 characters (the "…" is 3 bytes) and
		// two spaces between them.
		if len(l) > 7*(64+2+3) {
			t.Fatalf("line %d is %d bytes: %.100s…", i, len(l), l)
		}
		if i > 0 && !strings.HasPrefix(l, names[i-1]+" ") {
			t.Fatalf("line %d = %.100s, want %s", i, l, names[i-1])
		}
	}
	if row := lines[4322]; !strings.Contains(row, strings.Repeat("h", 63)+"…") {
		t.Errorf("the huge host is not cut: %.200s", row)
	}
	t.Logf("table of %d registrations: %d bytes", len(names), len(out))

	var view struct {
		Registrations []struct {
			Name   string
			Holder struct{ Host string }
		}
	}
	e.runJSON(t, &view, nil, "registrations")
	if len(view.Registrations) != len(names) || view.Registrations[4321].Holder.Host != hugeHost {
		t.Fatalf("JSON: %d registrations, the huge host whole: %v", len(view.Registrations), view.Registrations[4321].Holder.Host == hugeHost)
	}
}

// SIGINT and SIGTERM stop a listing that is printing, within a second: the
// command's context ends on the signal and the rows are checked against it.
// The reader takes nothing more until the signal is sent, so the listing
// (about 700 KB, over ten times a pipe's buffer) cannot end before it.
func TestRegistrationsStopOnSignal(t *testing.T) {
	e := start(t)
	e.storeRegistrations(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			ctx := testenv.Ctx(t, 30*time.Second)
			cmd := exec.CommandContext(ctx, harness.Binary(t), "--endpoints", e.endpoint, "registrations")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			first := make([]byte, 4096)
			if _, err := io.ReadFull(stdout, first); err != nil {
				t.Fatalf("no output: %v", err)
			}
			sent := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(stdout)
			_ = cmd.Wait()
			took := time.Since(sent)
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("exit %d, want 1\nstderr: %s", code, stderr.String())
			}
			want := map[syscall.Signal]string{syscall.SIGINT: "interrupt signal received", syscall.SIGTERM: "terminated signal received"}[sig]
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr %q does not say %q", stderr.String(), want)
			}
			// What the pipe held, and a row or so.
			if len(rest) > 256<<10 {
				t.Errorf("%d bytes printed after the signal", len(rest))
			}
			if took > time.Second {
				t.Errorf("exited %v after the signal", took)
			}
			t.Logf("%v: exited %v after the signal, %d bytes after it", sig, took, len(rest))
		})
	}
}

// --limit and --page-token walk the registrations in runs of the binary,
// every one exactly once; a bad --page-token is a usage error.
func TestRegistrationsPageToken(t *testing.T) {
	e := start(t)
	names := e.storeRegistrations(t)
	var got []string
	tok := ""
	for runs := 0; ; runs++ {
		args := []string{"registrations", "--limit", "3000"}
		if tok != "" {
			args = append(args, "--page-token", tok)
		}
		var out struct {
			Registrations []struct{ Name string }
			NextPageToken string `json:"next_page_token"`
		}
		e.runJSON(t, &out, nil, args...)
		for _, r := range out.Registrations {
			got = append(got, r.Name)
		}
		if tok = out.NextPageToken; tok == "" {
			break
		}
		if runs > 5 {
			t.Fatal("the listing does not end")
		}
	}
	if !slices.Equal(got, names) {
		t.Fatalf("%d listed across runs, want the %d in order", len(got), len(names))
	}
	_, stderr, code := e.run(t, nil, "registrations", "--page-token", "bogus")
	if code != 2 || !strings.Contains(stderr, "--page-token") {
		t.Errorf("a bad --page-token: exit %d\n%s", code, stderr)
	}
}
