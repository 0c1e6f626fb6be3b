package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// TestUsageErrors checks misuse of every verb and of the root: exit 2 and a
// usage line.
func TestUsageErrors(t *testing.T) {
	env := startEtcd(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown command", args: []string{"frobnicate"}, want: "unknown command"},
		{name: "unknown global flag", args: []string{"--bogus", "status"}, want: "unknown flag"},
		{name: "status with argument", args: []string{"status", "x"}, want: "takes no arguments"},
		{name: "status unknown flag", args: []string{"status", "--limit", "1"}, want: "unknown flag"},
		{name: "registrations with argument", args: []string{"registrations", "x"}, want: "takes no arguments"},
		{name: "ops with argument", args: []string{"ops", "x"}, want: "takes no arguments"},
		{name: "ops negative limit", args: []string{"ops", "--limit", "-1"}, want: "--limit"},
		{name: "ops malformed limit", args: []string{"ops", "--limit", "ten"}, want: "invalid argument"},
		{name: "bad dial timeout", args: []string{"status", "--dial-timeout", "soon"}, want: "invalid argument"},
		{name: "bad namespace", args: []string{"registrations", "--namespace", "a b"}, want: "--namespace"},
		{name: "serve negative history retention", args: []string{"serve", "--embed-history-retention", "-1s"}, want: "--embed-history-retention"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env.assertUsageError(t, "coordinator", tc.want, tc.args...)
		})
	}
}

// TestYAMLOutputIsUsageError checks that -o accepts only table and json.
func TestYAMLOutputIsUsageError(t *testing.T) {
	env := startEtcd(t)
	for _, args := range [][]string{
		{"status", "-o", "yaml"},
		{"registrations", "-o", "yaml"},
		{"ops", "--write-out", "yaml"},
		{"submit", "-o", "yaml", "--as", "a", "delete", "k"},
	} {
		r := runCLI(t, nil, env.args(args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") || !strings.Contains(r.stderr, "table or json") {
			t.Errorf("%v: exit %d, want %d with a usage line\nstderr: %s", args, r.code, exitUsage, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%v: printed %q", args, r.stdout)
		}
	}
}

// TestHelp checks that --help of every verb exits 0 and shows examples.
func TestHelp(t *testing.T) {
	for _, verb := range []string{"submit", "status", "registrations", "ops", "serve"} {
		r := runCLI(t, nil, verb, "--help")
		if r.code != exitOK {
			t.Errorf("%s --help: exit %d\nstderr: %s", verb, r.code, r.stderr)
		}
		for _, want := range []string{"Usage:", "coordinator " + verb, "Examples:", "--write-out"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s --help does not show %q:\n%s", verb, want, r.stdout)
			}
		}
	}
}

// TestUnreachableEtcdExits1 checks that a runtime failure exits 1 without a
// usage line.
func TestUnreachableEtcdExits1(t *testing.T) {
	// A loopback port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoints := "http://" + l.Addr().String()
	l.Close()
	for _, args := range [][]string{
		{"status"},
		{"registrations", "-o", "json"},
		{"ops"},
		{"submit", "--as", "a", "set", "k", "v"},
	} {
		r := runCLI(t, nil, append([]string{"--endpoints", endpoints, "--dial-timeout", "300ms"}, args...)...)
		if r.code != exitFailure {
			t.Errorf("%v: exit %d, want %d\nstderr: %s", args, r.code, exitFailure, r.stderr)
		}
		if strings.Contains(r.stderr, "Usage:") || !strings.Contains(r.stderr, "does not answer") {
			t.Errorf("%v: stderr should say etcd does not answer, without a usage line:\n%s", args, r.stderr)
		}
	}
}

// pendingFixture holds, with no node running so nothing is applied: a live
// registration "holder" with one pending set, and two earlier incarnations
// of "drainer" (each made and released by one submit) with one pending
// operation each. Tokens are in submission order.
type pendingFixture struct {
	env    *etcdEnv
	holder *client.Caller
	tokens []string
	names  []string
	keys   []string
}

func newPendingFixture(t *testing.T) *pendingFixture {
	t.Helper()
	ctx := testenv.Ctx(t, 30*time.Second)
	f := &pendingFixture{env: startEtcd(t)}
	c, err := client.New(client.Config{Etcd: f.env.cli})
	if err != nil {
		t.Fatal(err)
	}
	f.holder, err = c.Register(ctx, "holder", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.holder.Close(context.Background()) })

	submitCLI := func(key string) {
		r := runCLI(t, nil, f.env.args("submit", "--as", "drainer", "-o", "json", "set", key, "value-"+key)...)
		if r.code != exitOK {
			t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
		}
		var out struct{ Token string }
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("submit output: %v\n%s", err, r.stdout)
		}
		f.tokens, f.names, f.keys = append(f.tokens, out.Token), append(f.names, "drainer"), append(f.keys, key)
	}
	submitCLI("d1")
	tok, err := f.holder.Set(ctx, "h1", []byte("hv"), 0)
	if err != nil {
		t.Fatal(err)
	}
	f.tokens, f.names, f.keys = append(f.tokens, tok.String()), append(f.names, "holder"), append(f.keys, "h1")
	submitCLI("d2")
	return f
}

// TestInspectionOutput checks status, registrations and ops, in table and
// JSON, against pending work no node applies.
func TestInspectionOutput(t *testing.T) {
	f := newPendingFixture(t)
	env := f.env

	t.Run("ops json", func(t *testing.T) {
		r := runCLI(t, nil, env.args("ops", "-o", "json")...)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		var out map[string]json.RawMessage
		mustJSON(t, r.stdout, &out)
		for _, field := range []string{"namespace", "total", "ops", "undecodable"} {
			if _, ok := out[field]; !ok {
				t.Errorf("no field %q in %s", field, r.stdout)
			}
		}
		var ops []map[string]any
		mustJSON(t, string(out["ops"]), &ops)
		if len(ops) != 3 {
			t.Fatalf("%d ops, want 3:\n%s", len(ops), r.stdout)
		}
		for i, o := range ops {
			if o["token"] != f.tokens[i] || o["name"] != f.names[i] || o["key"] != f.keys[i] || o["op"] != "set" || o["index"] != 0.0 {
				t.Errorf("op %d = %v, want token %s name %s key %s", i, o, f.tokens[i], f.names[i], f.keys[i])
			}
			if _, ok := o["incarnation"].(string); !ok {
				t.Errorf("op %d: incarnation %v is not a string", i, o["incarnation"])
			}
		}
		assertTokenOrder(t, f.tokens)
	})

	t.Run("ops limit", func(t *testing.T) {
		r := runCLI(t, nil, env.args("ops", "--limit", "2", "-o", "json")...)
		var out opsView
		mustJSON(t, r.stdout, &out)
		if out.Total != 3 || len(out.Ops) != 2 || out.Ops[0].Token != f.tokens[0] || out.Ops[1].Token != f.tokens[1] {
			t.Errorf("ops --limit 2 = %+v, want the first 2 of 3", out)
		}
		r = runCLI(t, nil, env.args("ops", "--limit", "2")...)
		if lines := nonEmptyLines(r.stdout); len(lines) != 3 {
			t.Errorf("table of ops --limit 2 has %d lines, want a header and 2 rows:\n%s", len(lines), r.stdout)
		}
		if !strings.Contains(r.stderr, "2 of 3 pending operations shown") {
			t.Errorf("stderr does not say the list is cut: %q", r.stderr)
		}
	})

	t.Run("ops table", func(t *testing.T) {
		r := runCLI(t, nil, env.args("ops")...)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		lines := nonEmptyLines(r.stdout)
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "TOKEN") {
			t.Fatalf("want a header and 3 rows:\n%s", r.stdout)
		}
		for i, line := range lines[1:] {
			fields := strings.Fields(line)
			if fields[0] != f.tokens[i] || fields[2] != f.names[i] || fields[4] != "set" || fields[5] != f.keys[i] {
				t.Errorf("row %d = %q, want token %s name %s key %s", i, line, f.tokens[i], f.names[i], f.keys[i])
			}
		}
	})

	t.Run("registrations json", func(t *testing.T) {
		r := runCLI(t, nil, env.args("registrations", "-o", "json")...)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		var out struct {
			Namespace     string
			Registrations []map[string]any
		}
		mustJSON(t, r.stdout, &out)
		if out.Namespace != "default" || len(out.Registrations) != 3 {
			t.Fatalf("want 3 registrations in namespace default:\n%s", r.stdout)
		}
		// Sorted by name, then incarnation: drainer, drainer, holder.
		for i, reg := range out.Registrations[:2] {
			if reg["name"] != "drainer" || reg["status"] != "draining" || reg["pending"] != 1.0 || reg["holder"] != nil || reg["ttl_left_seconds"] != 0.0 {
				t.Errorf("registration %d = %v, want drainer draining with 1 pending", i, reg)
			}
		}
		if out.Registrations[0]["incarnation"] == out.Registrations[1]["incarnation"] {
			t.Errorf("the two drainer incarnations are the same: %v", out.Registrations[0]["incarnation"])
		}
		h := out.Registrations[2]
		holder, _ := h["holder"].(map[string]any)
		if h["name"] != "holder" || h["status"] != "active" || h["pending"] != 1.0 || holder == nil || holder["pid"] != float64(os.Getpid()) {
			t.Errorf("registration = %v, want holder active with 1 pending, held by pid %d", h, os.Getpid())
		}
		if ttl, _ := h["ttl_left_seconds"].(float64); ttl <= 0 || ttl > 10 {
			t.Errorf("ttl_left_seconds = %v, want in (0, 10]", h["ttl_left_seconds"])
		}
		if h["incarnation"] != strconv.FormatInt(f.holder.Incarnation(), 10) {
			t.Errorf("incarnation %v, want %d", h["incarnation"], f.holder.Incarnation())
		}
	})

	t.Run("registrations table", func(t *testing.T) {
		r := runCLI(t, nil, env.args("registrations")...)
		lines := nonEmptyLines(r.stdout)
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") {
			t.Fatalf("want a header and 3 rows:\n%s", r.stdout)
		}
		want := [][]string{{"drainer", "draining", "-", "-", "-", "1"}, {"drainer", "draining", "-", "-", "-", "1"}, {"holder", "active", "", strconv.Itoa(os.Getpid()), "", "1"}}
		for i, line := range lines[1:] {
			got := strings.Fields(line)
			if len(got) != 7 {
				t.Errorf("row %q has %d columns, want 7", line, len(got))
				continue
			}
			got = append(got[:1], got[2:]...) // drop the incarnation
			for j, w := range want[i] {
				if w != "" && got[j] != w {
					t.Errorf("row %q column %d = %q, want %q", line, j, got[j], w)
				}
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		r := runCLI(t, nil, env.args("status", "-o", "json")...)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		var out map[string]any
		mustJSON(t, r.stdout, &out)
		want := map[string]any{
			"namespace": "default", "leader": "", "term": 0.0, "applied": "0",
			"pending_ops": 3.0, "pending_ops_lower_bound": false, "pending_batches": 3.0, "registrations": 1.0,
			"quarantined": 0.0, "memcached_restarts": 0.0,
		}
		for k, w := range want {
			if out[k] != w {
				t.Errorf("status %s = %v, want %v", k, out[k], w)
			}
		}
		if len(out) != len(want) {
			t.Errorf("status has fields %v, want exactly %v", out, want)
		}
		r = runCLI(t, nil, env.args("status")...)
		lines := nonEmptyLines(r.stdout)
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAMESPACE") {
			t.Fatalf("want a header and a row:\n%s", r.stdout)
		}
		if got := strings.Fields(lines[1]); strings.Join(got, " ") != "default - 0 0 3 3 1 0 0 -" {
			t.Errorf("status row = %q", lines[1])
		}
	})
}

// TestSubmitTakeover checks that submit refuses a name held by a live
// process, naming the holder, and supersedes it with --takeover.
func TestSubmitTakeover(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	env := startEtcd(t)
	c, err := client.New(client.Config{Etcd: env.cli})
	if err != nil {
		t.Fatal(err)
	}
	owner, err := c.Register(ctx, "owner", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Close(context.Background()) })

	before := env.snapshot(t)
	r := runCLI(t, nil, env.args("submit", "--as", "owner", "set", "k", "v")...)
	if r.code != exitFailure {
		t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitFailure, r.stderr)
	}
	for _, want := range []string{"--takeover", "pid " + strconv.Itoa(os.Getpid()), strconv.FormatInt(owner.Incarnation(), 10)} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, r.stderr)
		}
	}
	after := env.snapshot(t)
	if after.rev != before.rev || after.leases != before.leases {
		t.Errorf("a refused submit changed etcd: revision %d -> %d, leases %d -> %d", before.rev, after.rev, before.leases, after.leases)
	}
	if _, err := owner.Set(ctx, "k", []byte("still mine"), 0); err != nil {
		t.Fatalf("owner after a refused takeover: %v", err)
	}

	r = runCLI(t, nil, env.args("submit", "--as", "owner", "--takeover", "set", "k", "v")...)
	if r.code != exitOK {
		t.Fatalf("submit --takeover: exit %d\nstderr: %s", r.code, r.stderr)
	}
	// submit has unregistered its incarnation by now, so the name is not
	// registered at all and the refusal may say expired rather than
	// superseded; either way the old owner can no longer write.
	_, err = owner.Set(ctx, "k", []byte("too late"), 0)
	if !errors.Is(err, client.ErrSuperseded) && !errors.Is(err, client.ErrExpired) {
		t.Errorf("owner after --takeover: %v, want a refusal", err)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func assertTokenOrder(t *testing.T, tokens []string) {
	t.Helper()
	var prev tokenseq.Token
	for i, s := range tokens {
		tok, err := tokenseq.ParseToken(s)
		if err != nil {
			t.Fatalf("token %q: %v", s, err)
		}
		if i > 0 && !prev.Less(tok) {
			t.Errorf("tokens out of order: %s then %s", prev, tok)
		}
		prev = tok
	}
}
