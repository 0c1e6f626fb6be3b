package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// storeRegistrations writes a registration of every name straight to etcd
// in the default namespace's layout, 128 to a transaction, under one lease.
func storeRegistrations(t *testing.T, cli *clientv3.Client, names []string, host func(string) string) {
	t.Helper()
	ctx := testenv.Ctx(t, 60*time.Second)
	layout := keyspace.MustNew(keyspace.DefaultNamespace)
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := range slices.Chunk(names, 128) {
		var puts []clientv3.Op
		for _, n := range chunk {
			rec, err := json.Marshal(map[string]any{"host": host(n), "pid": 7, "started": time.Unix(0, 0).UTC(), "ttl_seconds": 3600})
			if err != nil {
				t.Fatal(err)
			}
			puts = append(puts, clientv3.OpPut(layout.Reg(n), string(rec), clientv3.WithLease(grant.ID)))
		}
		if _, err := cli.Txn(ctx).Then(puts...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func callerNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("caller-%05d", i)
	}
	return names
}

// TestCut checks that long cells end in "…" at maxCellWidth characters,
// counted in characters, not bytes.
func TestCut(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("x", maxCellWidth), strings.Repeat("x", maxCellWidth)},
		{strings.Repeat("x", maxCellWidth+1), strings.Repeat("x", maxCellWidth-1) + "…"},
		{strings.Repeat("é", 1000), strings.Repeat("é", maxCellWidth-1) + "…"},
	} {
		if got := cut(tc.in); got != tc.want {
			t.Errorf("cut(%d runes) = %q, want %q", utf8.RuneCountInString(tc.in), got, tc.want)
		}
	}
}

// A 1.5 MB cell widens no column: every row of the table stays under a
// bound of the cell width, with either table printer.
func TestTableRowsAreBounded(t *testing.T) {
	huge := strings.Repeat("h", 1500000)
	v := registrationsView{Registrations: []registrationRow{
		{Name: "a", Incarnation: "1", Status: "active", Holder: &holderView{Host: huge, PID: 1}},
		{Name: "b", Incarnation: "2", Status: "active", Holder: &holderView{Host: "small", PID: 2}},
		{Name: strings.Repeat("n", 128), Incarnation: "3", Status: "draining"},
	}}
	table := tableView{head: registrationsHeader, cells: tableRows(v.Registrations)}
	var a, b bytes.Buffer
	if err := (tablePrinter{w: &a}).print(table); err != nil {
		t.Fatal(err)
	}
	if err := (&rowPrinter{w: &b}).print(table); err != nil {
		t.Fatal(err)
	}
	// Seven cells of at most maxCellWidth characters ("…" is 3 bytes) and
	// their separators.
	bound := len(registrationsHeader) * (maxCellWidth + 2 + 3)
	for name, out := range map[string]string{"tablePrinter": a.String(), "rowPrinter": b.String()} {
		lines := nonEmptyLines(out)
		if len(lines) != 4 {
			t.Fatalf("%s: %d lines:\n%s", name, len(lines), out)
		}
		for _, l := range lines {
			if len(l) > bound {
				t.Errorf("%s: a row of %d bytes, over %d", name, len(l), bound)
			}
		}
		if !strings.Contains(lines[1], strings.Repeat("h", maxCellWidth-1)+"…") {
			t.Errorf("%s: the huge host is not cut with …:\n%s", name, lines[1])
		}
	}
}

// tableView is a view of given cells.
type tableView struct {
	head  []string
	cells [][]string
}

func (v tableView) header() []string { return v.head }
func (v tableView) rows() [][]string { return v.cells }

// With 10,000 registrations, one of them with a 1.5 MB holder host, the
// table has a row per registration, each bounded, and -o json holds the
// host whole.
func TestRegistrationsTableWithAHugeCell(t *testing.T) {
	env := startEtcd(t)
	huge := strings.Repeat("h", 1500000)
	storeRegistrations(t, env.cli, callerNames(10000), func(n string) string {
		if n == "caller-01234" {
			return huge
		}
		return "host-" + n
	})
	r := runCLI(t, nil, env.args("registrations")...)
	if r.code != exitOK {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	lines := nonEmptyLines(r.stdout)
	if len(lines) != 10001 {
		t.Fatalf("%d lines, want a header and 10000 rows", len(lines))
	}
	bound := len(registrationsHeader) * (maxCellWidth + 2 + 3)
	for _, l := range lines {
		if len(l) > bound {
			t.Fatalf("a row of %d bytes, over %d: %.200s", len(l), bound, l)
		}
	}
	if len(r.stdout) > 10001*bound/2 {
		t.Errorf("the table is %d bytes", len(r.stdout))
	}

	r = runCLI(t, nil, env.args("registrations", "-o", "json")...)
	var out registrationsView
	mustJSON(t, r.stdout, &out)
	if len(out.Registrations) != 10000 || out.NextPageToken != "" {
		t.Fatalf("%d registrations, next %q", len(out.Registrations), out.NextPageToken)
	}
	if h := out.Registrations[1234].Holder; h == nil || h.Host != huge {
		t.Errorf("JSON does not hold the huge host whole")
	}
}

// cancellingWriter cancels its context, with a cause as a signal does, once
// it has taken a given number of lines, and records how many it took.
type cancellingWriter struct {
	mu       sync.Mutex
	lines    int
	after    int
	cancel   context.CancelCauseFunc
	canceled time.Time
}

var errSignal = errors.New("interrupt signal received")

func (w *cancellingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines += bytes.Count(p, []byte("\n"))
	if w.lines >= w.after && w.canceled.IsZero() {
		w.canceled = time.Now()
		w.cancel(errSignal)
	}
	return len(p), nil
}

// A listing stops within a second of its context's end (Ctrl-C or SIGTERM
// in main), checked between rows: a row or so after, it exits 1 naming the
// signal.
func TestListingStopsWhenInterrupted(t *testing.T) {
	env := startEtcd(t)
	storeRegistrations(t, env.cli, callerNames(10000), func(n string) string { return "host-" + n })
	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			w := &cancellingWriter{after: 1200, cancel: cancel}
			var errb bytes.Buffer
			code := run(ctx, env.args("registrations", "-o", format), strings.NewReader(""), w, &errb)
			took := time.Since(w.canceled)
			if code != exitFailure || !strings.Contains(errb.String(), errSignal.Error()) {
				t.Errorf("exit %d, stderr %q; want 1 naming the signal", code, errb.String())
			}
			rows := 10000 + 1
			if format == "json" {
				rows = 10000 * 9 // lines of the indented JSON
			}
			if w.lines > w.after+20 || w.lines >= rows {
				t.Errorf("%d lines written, the context ended after %d", w.lines, w.after)
			}
			if took > time.Second {
				t.Errorf("stopped %v after the context ended", took)
			}
		})
	}
}

// --limit and --page-token list every row once, in order, across runs;
// a bad --page-token or --page-size is a usage error.
func TestListingPageFlags(t *testing.T) {
	env := startEtcd(t)
	names := callerNames(2500)
	storeRegistrations(t, env.cli, names, func(n string) string { return "h" })

	var got []string
	tok := ""
	for runs := 0; ; runs++ {
		args := []string{"registrations", "-o", "json", "--limit", "700", "--page-size", "300"}
		if tok != "" {
			args = append(args, "--page-token", tok)
		}
		r := runCLI(t, nil, env.args(args...)...)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		var out registrationsView
		mustJSON(t, r.stdout, &out)
		if len(out.Registrations) > 700 {
			t.Fatalf("%d rows with --limit 700", len(out.Registrations))
		}
		for _, reg := range out.Registrations {
			got = append(got, reg.Name)
		}
		if tok = out.NextPageToken; tok == "" {
			break
		}
		if runs > 10 {
			t.Fatal("the listing does not end")
		}
	}
	if !slices.Equal(got, names) {
		t.Fatalf("%d names listed across runs, want the %d in order", len(got), len(names))
	}

	r := runCLI(t, nil, env.args("registrations", "--limit", "2")...)
	if !strings.Contains(r.stderr, "--page-token ") || len(nonEmptyLines(r.stdout)) != 3 {
		t.Errorf("--limit 2: stdout\n%s\nstderr\n%s", r.stdout, r.stderr)
	}
	next := strings.TrimSpace(r.stderr[strings.LastIndex(r.stderr, " ")+1:])
	r = runCLI(t, nil, env.args("registrations", "--limit", "1", "--page-token", next)...)
	if lines := nonEmptyLines(r.stdout); r.code != exitOK || len(lines) != 2 || !strings.HasPrefix(lines[1], names[2]) {
		t.Errorf("--page-token from the table: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	ops := runCLI(t, nil, env.args("ops", "-o", "json")...)
	if ops.code != exitOK {
		t.Fatalf("ops: %d %s", ops.code, ops.stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"registrations", "--page-token", "garbage"}, "--page-token"},
		{[]string{"ops", "--page-token", next}, "--page-token"},
		{[]string{"registrations", "--page-size", "1001"}, "--page-size"},
		{[]string{"ops", "--page-size", "-1"}, "--page-size"},
		{[]string{"registrations", "--limit", "-1"}, "--limit"},
	} {
		r := runCLI(t, nil, env.args(tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "Usage: coordinator") || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, want %d naming %s\nstdout: %s\nstderr: %s", tc.args, r.code, exitUsage, tc.want, r.stdout, r.stderr)
		}
	}
}

// An empty listing is a table header, or a JSON document with an empty
// array.
func TestEmptyListings(t *testing.T) {
	env := startEtcd(t)
	for _, verb := range []string{"registrations", "ops"} {
		r := runCLI(t, nil, env.args(verb)...)
		if lines := nonEmptyLines(r.stdout); r.code != exitOK || len(lines) != 1 {
			t.Errorf("%s: exit %d, want a header only:\n%s", verb, r.code, r.stdout)
		}
		r = runCLI(t, nil, env.args(verb, "-o", "json")...)
		var out map[string]any
		mustJSON(t, r.stdout, &out)
		if rows, ok := out[map[string]string{"registrations": "registrations", "ops": "ops"}[verb]].([]any); !ok || len(rows) != 0 || out["next_page_token"] != "" {
			t.Errorf("%s -o json: %s", verb, r.stdout)
		}
	}
}
