// Package cli tests the coordinator command line end to end: the real
// binary, a real `coordinator serve` node with its own embedded etcd, and a
// real memcached read directly with a memcached client.
package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

func TestMain(m *testing.M) { testenv.Main(m, harness.Cleanup) }

// env is one memcached and one coordinator node with its own embedded etcd.
type env struct {
	mc       *testenv.Memcached
	node     *harness.Node
	endpoint string
	client   *client.Client
}

// start starts memcached and a node, and waits until the node leads.
func start(t *testing.T) *env {
	t.Helper()
	mc := testenv.StartMemcached(t)
	n := harness.StartNode(t, harness.NodeOptions{ID: "node-a", Memcached: mc.Addr})
	e := &env{mc: mc, node: n, endpoint: n.EmbedEndpoint()}
	c, err := client.New(client.Config{Etcd: testenv.Client(t, []string{e.endpoint})})
	if err != nil {
		t.Fatal(err)
	}
	e.client = c
	in, err := inspect.New(c.Etcd(), "default")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 60*time.Second)
	testenv.Eventually(t, 30*time.Second, func() bool {
		st, err := in.Status(ctx)
		return err == nil && st.Leader == n.ID
	}, "node %s never became leader", n.ID)
	return e
}

// run runs the binary against the node's etcd.
func (e *env) run(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var r io.Reader
	if stdin != nil {
		r = bytes.NewReader(stdin)
	}
	return harness.Run(t, r, append([]string{"--endpoints", e.endpoint}, args...)...)
}

// runOK runs the binary and fails the test unless it exits 0.
func (e *env) runOK(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errOut, code := e.run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("coordinator %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// runJSON runs the binary with -o json and decodes its output into v.
func (e *env) runJSON(t *testing.T, v any, stdin []byte, args ...string) {
	t.Helper()
	out := e.runOK(t, stdin, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("coordinator %v: output is not JSON: %v\n%s", args, err, out)
	}
}

func (e *env) memcached() *memcache.Client {
	mc := memcache.New(e.mc.Addr)
	mc.Timeout = 2 * time.Second
	return mc
}

// submitOut is the JSON output of submit.
type submitOut struct {
	Token       string `json:"token"`
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	Applied     bool   `json:"applied"`
}

type statusOut struct {
	Namespace      string `json:"namespace"`
	Leader         string `json:"leader"`
	Term           uint64 `json:"term"`
	Applied        string `json:"applied"`
	PendingOps     int    `json:"pending_ops"`
	PendingBatches int    `json:"pending_batches"`
	Registrations  int    `json:"registrations"`
	Quarantined    int64  `json:"quarantined"`
}

type registrationOut struct {
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	Status      string `json:"status"`
	Pending     int    `json:"pending"`
	Holder      *struct {
		Host string `json:"host"`
		PID  int    `json:"pid"`
	} `json:"holder"`
	TTLLeftSeconds int64 `json:"ttl_left_seconds"`
}

type registrationsOut struct {
	Namespace     string            `json:"namespace"`
	Registrations []registrationOut `json:"registrations"`
}

type opOut struct {
	Token       string `json:"token"`
	Index       int    `json:"index"`
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	Op          string `json:"op"`
	Key         string `json:"key"`
	ValueBytes  int    `json:"value_bytes"`
}

type opsOut struct {
	Namespace   string   `json:"namespace"`
	Total       int      `json:"total"`
	Ops         []opOut  `json:"ops"`
	Undecodable []string `json:"undecodable"`
}

func parseToken(t *testing.T, s string) tokenseq.Token {
	t.Helper()
	tok, err := tokenseq.ParseToken(s)
	if err != nil {
		t.Fatalf("token %q: %v", s, err)
	}
	return tok
}

// rows returns the table rows of out, split into fields, after checking the
// header starts with first.
func rows(t *testing.T, out, first string) [][]string {
	t.Helper()
	lines := harness.Lines(strings.TrimSpace(out))
	if len(lines) == 0 || !strings.HasPrefix(lines[0], first) {
		t.Fatalf("table has no header starting with %s:\n%s", first, out)
	}
	var rs [][]string
	for _, l := range lines[1:] {
		rs = append(rs, strings.Fields(l))
	}
	return rs
}

// TestSubmitSetAndDelete submits through the binary with --wait and reads
// memcached directly: the value is there as soon as submit returns, and gone
// after a delete.
func TestSubmitSetAndDelete(t *testing.T) {
	e := start(t)
	mc := e.memcached()

	var set submitOut
	e.runJSON(t, &set, nil, "submit", "--as", "cli-writer", "set", "greeting", "hello world", "--wait")
	if !set.Applied || set.Name != "cli-writer" || set.Incarnation == "" {
		t.Fatalf("submit output %+v: want applied under cli-writer", set)
	}
	tok := parseToken(t, set.Token)
	it, err := mc.Get("greeting")
	if err != nil {
		t.Fatalf("memcached get after submit --wait: %v", err)
	}
	if string(it.Value) != "hello world" {
		t.Fatalf("memcached has %q, want %q", it.Value, "hello world")
	}

	// Table output: a header and one row with the token, applied true.
	out := e.runOK(t, nil, "submit", "--as", "cli-writer", "set", "greeting", "hi", "--expire", "300", "--wait")
	rs := rows(t, out, "TOKEN")
	if len(rs) != 1 || len(rs[0]) != 4 || rs[0][1] != "cli-writer" || rs[0][3] != "true" {
		t.Fatalf("submit table output:\n%s", out)
	}
	if tok2 := parseToken(t, rs[0][0]); !tok.Less(tok2) {
		t.Errorf("second token %s is not after the first %s", tok2, tok)
	}
	if it, err := mc.Get("greeting"); err != nil || string(it.Value) != "hi" {
		t.Fatalf("memcached after the second set: %v %v", it, err)
	}

	var del submitOut
	e.runJSON(t, &del, nil, "submit", "--as", "cli-writer", "delete", "greeting", "--wait")
	if !del.Applied {
		t.Fatalf("delete output %+v: want applied", del)
	}
	if _, err := mc.Get("greeting"); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("memcached get after delete --wait: %v, want a miss", err)
	}

	// Nothing is left registered or pending.
	var st statusOut
	e.runJSON(t, &st, nil, "status")
	if st.Registrations != 0 || st.PendingOps != 0 || parseToken(t, st.Applied).Less(parseToken(t, del.Token)) {
		t.Errorf("status after the submits: %+v", st)
	}
}

// TestSubmitValueFromStdin sets a 200 KiB binary value read from stdin.
func TestSubmitValueFromStdin(t *testing.T) {
	e := start(t)
	value := make([]byte, 200<<10)
	if _, err := rand.Read(value); err != nil {
		t.Fatal(err)
	}
	var out submitOut
	e.runJSON(t, &out, value, "submit", "--as", "uploader", "set", "blob", "-", "--wait")
	if !out.Applied {
		t.Fatalf("submit output %+v: want applied", out)
	}
	it, err := e.memcached().Get("blob")
	if err != nil {
		t.Fatalf("memcached get: %v", err)
	}
	if !bytes.Equal(it.Value, value) {
		t.Fatalf("memcached holds %d bytes that differ from the %d sent", len(it.Value), len(value))
	}

	// A value over the item size is refused before anything is written.
	var before statusOut
	e.runJSON(t, &before, nil, "status")
	_, stderr, code := e.run(t, make([]byte, 1<<20+1), "submit", "--as", "uploader", "set", "blob", "-")
	if code != 2 || !strings.Contains(stderr, "over the maximum item size") || !strings.Contains(stderr, "Usage:") {
		t.Fatalf("oversized value: exit %d, want 2 with a usage line\n%s", code, stderr)
	}
	var after statusOut
	e.runJSON(t, &after, nil, "status")
	if after.PendingOps != 0 || after.Applied != before.Applied || after.Registrations != 0 {
		t.Errorf("oversized value changed the state: before %+v, after %+v", before, after)
	}
	if it, err := e.memcached().Get("blob"); err != nil || !bytes.Equal(it.Value, value) {
		t.Errorf("oversized value changed memcached: %v", err)
	}
}

// TestSubmitTakeover holds a name with a live registration from the test:
// submit refuses it and names the holder; --takeover supersedes it.
func TestSubmitTakeover(t *testing.T) {
	e := start(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	owner, err := e.client.Register(ctx, "owner", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Close(context.Background()) })

	stdout, stderr, code := e.run(t, nil, "submit", "--as", "owner", "set", "owned", "theirs", "--wait")
	if code != 1 {
		t.Fatalf("submit on a held name: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"--takeover", "pid " + strconv.Itoa(os.Getpid()), strconv.FormatInt(owner.Incarnation(), 10)} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refusal does not mention %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "Usage:") {
		t.Errorf("a held name is not a usage error:\n%s", stderr)
	}
	if _, err := e.memcached().Get("owned"); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Errorf("refused submit reached memcached: %v", err)
	}
	// The owner is untouched and can still write.
	tok, err := owner.Set(ctx, "owned", []byte("mine"), 0)
	if err != nil {
		t.Fatalf("owner after the refusal: %v", err)
	}
	if err := owner.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}

	var out submitOut
	e.runJSON(t, &out, nil, "submit", "--as", "owner", "--takeover", "set", "owned", "theirs", "--wait")
	if !out.Applied || out.Name != "owner" {
		t.Fatalf("submit --takeover output %+v", out)
	}
	if inc, _ := strconv.ParseInt(out.Incarnation, 10, 64); inc <= owner.Incarnation() {
		t.Errorf("takeover incarnation %s is not newer than the owner's %d", out.Incarnation, owner.Incarnation())
	}
	if it, err := e.memcached().Get("owned"); err != nil || string(it.Value) != "theirs" {
		t.Fatalf("memcached after --takeover: %v %v", it, err)
	}
	// The superseded owner is fenced off.
	if _, err := owner.Set(ctx, "owned", []byte("late"), 0); !errors.Is(err, client.ErrSuperseded) && !errors.Is(err, client.ErrExpired) {
		t.Errorf("owner after --takeover: %v, want a refusal", err)
	}
}

// TestStatus checks that status shows the leader, the term and a watermark
// at or past the last token submitted with --wait.
func TestStatus(t *testing.T) {
	e := start(t)
	var sub submitOut
	e.runJSON(t, &sub, nil, "submit", "--as", "stat", "set", "k", "v", "--wait")

	var st statusOut
	e.runJSON(t, &st, nil, "status")
	if st.Namespace != "default" || st.Leader != e.node.ID || st.Term < 1 || st.PendingOps != 0 || st.Quarantined != 0 {
		t.Errorf("status %+v: want leader %s, a term, nothing pending", st, e.node.ID)
	}
	if parseToken(t, st.Applied).Less(parseToken(t, sub.Token)) {
		t.Errorf("applied watermark %s is before the applied token %s", st.Applied, sub.Token)
	}

	out := e.runOK(t, nil, "status")
	rs := rows(t, out, "NAMESPACE")
	if len(rs) != 1 || len(rs[0]) != 10 {
		t.Fatalf("status table:\n%s", out)
	}
	if rs[0][0] != "default" || rs[0][1] != e.node.ID || rs[0][2] != strconv.FormatUint(st.Term, 10) || rs[0][3] != st.Applied {
		t.Errorf("status row %q, want default %s %d %s", rs[0], e.node.ID, st.Term, st.Applied)
	}
}

// TestPendingWhileMemcachedDown stops memcached and submits: the operations
// stay pending, registrations shows the caller held by the test as active
// and the released incarnations of the submits as draining with their
// pending count, ops lists them in token order. Once memcached is back they
// are applied and the draining incarnations are forgotten.
func TestPendingWhileMemcachedDown(t *testing.T) {
	e := start(t)
	ctx := testenv.Ctx(t, 120*time.Second)
	holder, err := e.client.Register(ctx, "holder", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Close(context.Background()) })

	e.mc.Stop()

	type sent struct{ token, name, key, op string }
	var want []sent
	submit := func(args ...string) submitOut {
		var out submitOut
		e.runJSON(t, &out, nil, append([]string{"submit", "--as", "drainer"}, args...)...)
		if out.Applied {
			t.Fatalf("submit %v applied while memcached is down", args)
		}
		return out
	}
	d1 := submit("set", "d1", "one")
	want = append(want, sent{d1.Token, "drainer", "d1", "set"})
	htok, err := holder.Set(ctx, "h1", []byte("held"), 0)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, sent{htok.String(), "holder", "h1", "set"})
	d2 := submit("set", "d2", "two", "--expire", "1h")
	want = append(want, sent{d2.Token, "drainer", "d2", "set"})
	d3 := submit("delete", "d1")
	want = append(want, sent{d3.Token, "drainer", "d1", "delete"})

	// ops, JSON: every pending operation in token order.
	var ops opsOut
	e.runJSON(t, &ops, nil, "ops")
	if ops.Total != len(want) || len(ops.Ops) != len(want) || len(ops.Undecodable) != 0 {
		t.Fatalf("ops: %+v, want %d pending", ops, len(want))
	}
	for i, w := range want {
		o := ops.Ops[i]
		if o.Token != w.token || o.Name != w.name || o.Key != w.key || o.Op != w.op || o.Index != 0 {
			t.Errorf("ops[%d] = %+v, want %+v", i, o, w)
		}
		if i > 0 && !parseToken(t, ops.Ops[i-1].Token).Less(parseToken(t, o.Token)) {
			t.Errorf("ops out of token order: %s then %s", ops.Ops[i-1].Token, o.Token)
		}
	}
	if ops.Ops[1].Incarnation != strconv.FormatInt(holder.Incarnation(), 10) {
		t.Errorf("holder's op incarnation %s, want %d", ops.Ops[1].Incarnation, holder.Incarnation())
	}
	if ops.Ops[0].ValueBytes != 3 || ops.Ops[3].ValueBytes != 0 {
		t.Errorf("value sizes %d and %d, want 3 and 0", ops.Ops[0].ValueBytes, ops.Ops[3].ValueBytes)
	}

	// ops --limit, JSON and table.
	var first opsOut
	e.runJSON(t, &first, nil, "ops", "--limit", "2")
	if first.Total != len(want) || len(first.Ops) != 2 || first.Ops[0].Token != want[0].token || first.Ops[1].Token != want[1].token {
		t.Errorf("ops --limit 2: %+v", first)
	}
	out := e.runOK(t, nil, "ops")
	rs := rows(t, out, "TOKEN")
	if len(rs) != len(want) {
		t.Fatalf("ops table has %d rows, want %d:\n%s", len(rs), len(want), out)
	}
	for i, w := range want {
		if rs[i][0] != w.token || rs[i][2] != w.name || rs[i][4] != w.op || rs[i][5] != w.key {
			t.Errorf("ops table row %d = %q, want %+v", i, rs[i], w)
		}
	}

	// registrations, JSON: drainer's three incarnations draining, one op
	// each; holder active with its one op, held by this process.
	var regs registrationsOut
	e.runJSON(t, &regs, nil, "registrations")
	if len(regs.Registrations) != 4 {
		t.Fatalf("registrations: %+v, want 4", regs)
	}
	for i, d := range []submitOut{d1, d2, d3} {
		r := regs.Registrations[i]
		if r.Name != "drainer" || r.Incarnation != d.Incarnation || r.Status != "draining" || r.Pending != 1 || r.Holder != nil {
			t.Errorf("registrations[%d] = %+v, want drainer incarnation %s draining with 1 pending", i, r, d.Incarnation)
		}
	}
	h := regs.Registrations[3]
	if h.Name != "holder" || h.Status != "active" || h.Pending != 1 || h.Holder == nil || h.Holder.PID != os.Getpid() || h.TTLLeftSeconds <= 0 {
		t.Errorf("registrations[3] = %+v, want holder active with 1 pending, held by pid %d", h, os.Getpid())
	}
	out = e.runOK(t, nil, "registrations")
	rs = rows(t, out, "NAME")
	if len(rs) != 4 || rs[0][2] != "draining" || rs[0][6] != "1" || rs[3][0] != "holder" || rs[3][2] != "active" || rs[3][4] != strconv.Itoa(os.Getpid()) {
		t.Errorf("registrations table:\n%s", out)
	}

	var st statusOut
	e.runJSON(t, &st, nil, "status")
	if st.PendingOps != len(want) || st.PendingBatches != len(want) || st.Registrations != 1 || !parseToken(t, st.Applied).Less(parseToken(t, d1.Token)) {
		t.Errorf("status while memcached is down: %+v", st)
	}

	// memcached back: everything is applied, in order.
	e.mc.Start()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := e.client.WaitApplied(wctx, parseToken(t, d3.Token)); err != nil {
		t.Fatalf("wait for the pending operations after memcached came back: %v", err)
	}
	mc := e.memcached()
	if _, err := mc.Get("d1"); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Errorf("d1 was set then deleted; memcached get: %v", err)
	}
	for k, v := range map[string]string{"d2": "two", "h1": "held"} {
		if it, err := mc.Get(k); err != nil || string(it.Value) != v {
			t.Errorf("memcached %s: %v %v, want %q", k, it, err, v)
		}
	}
	e.runJSON(t, &ops, nil, "ops")
	if ops.Total != 0 || len(ops.Ops) != 0 {
		t.Errorf("ops after apply: %+v", ops)
	}
	e.runJSON(t, &regs, nil, "registrations")
	if len(regs.Registrations) != 1 || regs.Registrations[0].Name != "holder" || regs.Registrations[0].Pending != 0 {
		t.Errorf("registrations after apply: %+v, want only holder with nothing pending", regs)
	}
}

// TestHelp checks that --help of every verb exits 0 and prints usage and
// examples.
func TestHelp(t *testing.T) {
	for _, verb := range []string{"submit", "status", "registrations", "ops", "serve"} {
		stdout, stderr, code := harness.Run(t, nil, verb, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d\n%s", verb, code, stderr)
		}
		for _, want := range []string{"Usage:", "coordinator " + verb, "Examples:"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s --help does not show %q:\n%s", verb, want, stdout)
			}
		}
	}
}

// TestUsageErrorExits2 checks the exit status and usage line of the real
// binary on misuse.
func TestUsageErrorExits2(t *testing.T) {
	for _, args := range [][]string{
		{"submit", "--as", "x", "incr", "k"},
		{"status", "-o", "yaml"},
		{"ops", "--limit", "-3"},
		{"registrations", "extra"},
	} {
		_, stderr, code := harness.Run(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") {
			t.Errorf("%v: exit %d, want 2 with a usage line\n%s", args, code, stderr)
		}
	}
}
