package inspect_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// fixture writes a namespace's records straight to etcd, in the layout the
// coordinator uses, many to a transaction: registrations under one lease,
// and pending batches (several to a transaction, as group commit stores
// them).
type fixture struct {
	t      *testing.T
	ctx    context.Context
	cli    *clientv3.Client
	layout keyspace.Layout
	ns     string
	lease  clientv3.LeaseID
	seq    int
}

func newFixture(t *testing.T, ns string) *fixture {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 120*time.Second)
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, cli: cli, layout: keyspace.MustNew(ns), ns: ns, lease: grant.ID}
}

// register writes a registration of every name, 128 to a transaction, and
// returns each name's incarnation.
func (f *fixture) register(names []string, host func(name string) string) map[string]int64 {
	f.t.Helper()
	incs := map[string]int64{}
	for chunk := range slices.Chunk(names, 128) {
		var puts []clientv3.Op
		for _, n := range chunk {
			rec, err := json.Marshal(map[string]any{"host": host(n), "pid": 42, "started": time.Unix(0, 0).UTC(), "ttl_seconds": 3600})
			if err != nil {
				f.t.Fatal(err)
			}
			puts = append(puts, clientv3.OpPut(f.layout.Reg(n), string(rec), clientv3.WithLease(f.lease)))
		}
		resp, err := f.cli.Txn(f.ctx).Then(puts...).Commit()
		if err != nil {
			f.t.Fatal(err)
		}
		for _, n := range chunk {
			incs[n] = resp.Header.Revision
		}
	}
	return incs
}

// pendingBatch is a batch to store: its operations' keys (sets of a value
// of len(key) bytes).
type pendingBatch struct {
	name string
	inc  int64
	keys []string
}

// submit stores the batches in one transaction, with indexes in the given
// order and ids in the reverse order (so that key order is not token
// order), and returns their tokens.
func (f *fixture) submit(batches ...pendingBatch) []tokenseq.Token {
	f.t.Helper()
	var puts []clientv3.Op
	for i, pb := range batches {
		f.seq++
		b := &ops.Batch{Name: pb.name, Incarnation: pb.inc, ID: fmt.Sprintf("id%08d", 1e7-f.seq), Index: uint32(i)}
		for _, k := range pb.keys {
			b.Ops = append(b.Ops, ops.Set(k, []byte(k), 0))
		}
		puts = append(puts, clientv3.OpPut(f.layout.Batch(pb.name, pb.inc, b.ID), string(b.Encode())))
	}
	resp, err := f.cli.Txn(f.ctx).Then(puts...).Commit()
	if err != nil {
		f.t.Fatal(err)
	}
	toks := make([]tokenseq.Token, len(batches))
	for i := range batches {
		toks[i] = tokenseq.Token{Revision: resp.Header.Revision, Index: uint32(i)}
	}
	return toks
}

func (f *fixture) inspector() *inspect.Inspector {
	in, err := inspect.New(f.cli, f.ns)
	if err != nil {
		f.t.Fatal(err)
	}
	return in
}

// allRegistrations pages through the view with page size size and checks
// each page against it.
func allRegistrations(t *testing.T, ctx context.Context, in *inspect.Inspector, size int) []inspect.RegistrationView {
	t.Helper()
	var out []inspect.RegistrationView
	req := inspect.PageRequest{Size: size}
	for pages := 0; ; pages++ {
		page, err := in.RegistrationsPage(ctx, req)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		want := min(max(size, 1), inspect.MaxPageSize)
		if size == 0 {
			want = inspect.DefaultPageSize
		}
		if len(page.Registrations) > want {
			t.Fatalf("page %d has %d rows, over %d", pages, len(page.Registrations), want)
		}
		out = append(out, page.Registrations...)
		if page.NextToken == "" {
			return out
		}
		if pages > 100000 {
			t.Fatal("paging does not end")
		}
		req.Token = page.NextToken
	}
}

func rowKey(r inspect.RegistrationView) string {
	return fmt.Sprintf("%s@%d %s pending %d", r.Name, r.Incarnation, r.Status, r.Pending)
}

// Names that are prefixes of one another by a character that sorts before
// '/' are listed in name order although the ops range keeps their batches
// in another order; every page size lists every row exactly once.
func TestRegistrationsPagesInNameOrder(t *testing.T) {
	f := newFixture(t, "p")
	// The current incarnations are revisions past the draining ones.
	for range 10 {
		if _, err := f.cli.Put(f.ctx, "unrelated", "x"); err != nil {
			t.Fatal(err)
		}
	}
	registered := []string{"agent", "agent-7", "agent.eu", "agent0", "b", "svc", "x-1", "x-2", "zz"}
	incs := f.register(registered, func(string) string { return "host" })
	// Pending work: the current incarnations of some, earlier (draining)
	// incarnations of others, and names not registered at all.
	type drain struct {
		name string
		inc  int64
		n    int
	}
	drains := []drain{
		{"agent", 3, 2}, {"agent", 5, 1}, {"agent-", 4, 1}, {"agent-7-x", 2, 3}, {"agent!", 2, 1},
		{"a", 2, 1}, {"ghost", 9, 2}, {"ghost-1", 7, 1}, {"svc", 2, 1}, {"zzz", 3, 4},
		{"x", 3, 1}, {"x", 4, 2}, {"x!", 2, 1}, {"x-1-a", 5, 1}, {"x-", 6, 1},
	}
	for _, d := range drains {
		keys := make([]string, d.n)
		for i := range keys {
			keys[i] = fmt.Sprintf("%s-%d-%d", d.name, d.inc, i)
		}
		f.submit(pendingBatch{name: d.name, inc: d.inc, keys: keys})
	}
	f.submit(pendingBatch{name: "agent-7", inc: incs["agent-7"], keys: []string{"k1", "k2"}},
		pendingBatch{name: "b", inc: incs["b"], keys: []string{"k3"}})

	var want []string
	for _, n := range registered {
		pending := 0
		switch n {
		case "agent-7":
			pending = 2
		case "b":
			pending = 1
		}
		want = append(want, fmt.Sprintf("%s@%d active pending %d", n, incs[n], pending))
	}
	for _, d := range drains {
		want = append(want, fmt.Sprintf("%s@%d draining pending %d", d.name, d.inc, d.n))
	}
	slices.SortFunc(want, func(a, b string) int {
		an, ai, _ := strings.Cut(a, "@")
		bn, bi, _ := strings.Cut(b, "@")
		if an != bn {
			return strings.Compare(an, bn)
		}
		var x, y int64
		fmt.Sscan(strings.Fields(ai)[0], &x)
		fmt.Sscan(strings.Fields(bi)[0], &y)
		return int(x - y)
	})

	in := f.inspector()
	for _, size := range []int{1, 2, 3, 4, 5, 7, 0, inspect.MaxPageSize + 5} {
		t.Run(fmt.Sprint("size ", size), func(t *testing.T) {
			defer inspect.SetPendingNamesRead(int64(1 + size%3))()
			rows := allRegistrations(t, f.ctx, in, size)
			got := make([]string, len(rows))
			for i, r := range rows {
				got[i] = rowKey(r)
				if r.Status == inspect.StatusActive && (r.TTLLeft <= 0 || r.Holder.Host != "host") {
					t.Errorf("active row %s: ttl %v, holder %+v", got[i], r.TTLLeft, r.Holder)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
	all, err := in.Registrations(f.ctx)
	if err != nil || len(all) != len(want) {
		t.Fatalf("Registrations: %d rows, %v", len(all), err)
	}
}

// With 10,000 registrations, one of them with a 1.5 MB holder host, paging
// lists every one exactly once, in name order, and every page is bounded in
// size, the huge record's included.
func TestRegistrationsPagingAt10000(t *testing.T) {
	f := newFixture(t, "big")
	const n = 10000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("caller-%05d", i)
	}
	huge := strings.Repeat("h", 1500000)
	start := time.Now()
	incs := f.register(names, func(name string) string {
		if name == "caller-04321" {
			return huge
		}
		return "host-" + name
	})
	t.Logf("wrote %d registrations in %v", n, time.Since(start))
	in := f.inspector()

	for _, size := range []int{0, inspect.MaxPageSize} {
		seen := map[string]bool{}
		var prev string
		req := inspect.PageRequest{Size: size}
		pages, maxBytes, maxOther := 0, 0, 0
		var slowest time.Duration
		for {
			t0 := time.Now()
			page, err := in.RegistrationsPage(f.ctx, req)
			slowest = max(slowest, time.Since(t0))
			if err != nil {
				t.Fatal(err)
			}
			pages++
			b, err := json.Marshal(page)
			if err != nil {
				t.Fatal(err)
			}
			maxBytes = max(maxBytes, len(b))
			hasHuge := false
			for _, r := range page.Registrations {
				if seen[r.Name] {
					t.Fatalf("%s listed twice", r.Name)
				}
				if r.Name <= prev {
					t.Fatalf("%s after %s", r.Name, prev)
				}
				if r.Incarnation != incs[r.Name] || r.Status != inspect.StatusActive || r.TTLLeft <= 0 {
					t.Fatalf("row %+v, want incarnation %d, active, with a TTL", r, incs[r.Name])
				}
				seen[r.Name], prev = true, r.Name
				hasHuge = hasHuge || r.Holder.Host == huge
			}
			if !hasHuge {
				maxOther = max(maxOther, len(b))
			}
			if page.NextToken == "" {
				break
			}
			req.Token = page.NextToken
		}
		if len(seen) != n {
			t.Fatalf("page size %d: %d registrations listed, want %d", size, len(seen), n)
		}
		// A row's JSON is under 200 bytes here; the huge host's page may
		// hold up to MaxPageBytes of other rows before it.
		limit := min(max(size, inspect.DefaultPageSize), inspect.MaxPageSize) * 200
		if maxOther > limit || maxBytes > inspect.MaxPageBytes+len(huge)+limit {
			t.Errorf("page size %d: largest page %d bytes, largest without the huge host %d (bounds %d, %d)",
				size, maxBytes, maxOther, inspect.MaxPageBytes+len(huge)+limit, limit)
		}
		t.Logf("page size %d: %d pages, largest %d bytes (%d without the huge host), slowest page %v", size, pages, maxBytes, maxOther, slowest)
	}
}

// Pending operations are listed in token order, batches of one transaction
// by index (not by key), across pages that end inside a batch or a
// transaction, exactly once for every page size.
func TestOpsPagesInTokenOrder(t *testing.T) {
	f := newFixture(t, "o")
	type want struct {
		tok  tokenseq.Token
		op   int
		name string
		key  string
	}
	var all []want
	names := []string{"zed", "alpha", "mid"}
	for txn := range 40 {
		var bs []pendingBatch
		for b := range 1 + txn%4 {
			pb := pendingBatch{name: names[(txn+b)%3], inc: int64(1 + b)}
			for o := range 1 + (txn+b)%3 {
				pb.keys = append(pb.keys, fmt.Sprintf("k-%d-%d-%d", txn, b, o))
			}
			bs = append(bs, pb)
		}
		toks := f.submit(bs...)
		for i, pb := range bs {
			for o, k := range pb.keys {
				all = append(all, want{toks[i], o, pb.name, k})
			}
		}
	}
	// A record that cannot be decoded is reported once.
	if _, err := f.cli.Put(f.ctx, f.layout.Batch("bad", 1, "x"), "garbage"); err != nil {
		t.Fatal(err)
	}
	in := f.inspector()
	for _, size := range []int{1, 2, 3, 7, 50, 0} {
		t.Run(fmt.Sprint("size ", size), func(t *testing.T) {
			var got []inspect.PendingOp
			var bad []string
			req := inspect.PageRequest{Size: size}
			for {
				page, err := in.OpsPage(f.ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if size > 0 && len(page.Ops) > size {
					t.Fatalf("page of %d ops, over %d", len(page.Ops), size)
				}
				got = append(got, page.Ops...)
				bad = append(bad, page.Undecodable...)
				if page.NextToken == "" {
					break
				}
				req.Token = page.NextToken
			}
			if len(got) != len(all) {
				t.Fatalf("%d ops listed, want %d", len(got), len(all))
			}
			for i, w := range all {
				g := got[i]
				if g.Token != w.tok || g.Index != w.op || g.Name != w.name || g.Key != w.key || g.Op != "set" || g.ValueBytes != len(w.key) {
					t.Fatalf("op %d = %+v, want %+v", i, g, w)
				}
			}
			if len(bad) != 1 || bad[0] != f.layout.Batch("bad", 1, "x") {
				t.Errorf("undecodable %q", bad)
			}
		})
	}

	st, err := in.Status(f.ctx)
	if err != nil || st.PendingBatches != 101 || st.PendingOps != len(all) || st.PendingOpsLowerBound {
		t.Errorf("status %+v, %v: want 101 batches (one undecodable), %d ops, exact", st, err, len(all))
	}
}

// Status reads MaxCountedBatches pending batches to count their operations,
// counts one for each other batch and says the count is a lower bound; the
// batch count stays exact. A page of the registrations view does the same.
func TestStatusCountsABoundedBacklog(t *testing.T) {
	f := newFixture(t, "s")
	total := inspect.MaxCountedBatches + 200
	for i := 0; i < total; i += 100 {
		var bs []pendingBatch
		for j := range 100 {
			bs = append(bs, pendingBatch{name: "n", inc: 1, keys: []string{fmt.Sprint("a", i+j), fmt.Sprint("b", i+j)}})
		}
		f.submit(bs...)
	}
	f.submit(pendingBatch{name: "n", inc: 2, keys: []string{"c"}})
	in := f.inspector()
	st, err := in.Status(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The operations of the first MaxCountedBatches batches, and one for
	// each other batch.
	wantOps := 2*inspect.MaxCountedBatches + total + 1 - inspect.MaxCountedBatches
	if st.PendingBatches != total+1 || st.PendingOps != wantOps || !st.PendingOpsLowerBound {
		t.Errorf("status %+v: want %d batches, %d ops, a lower bound", st, total+1, wantOps)
	}
	// A page of the registrations view reads as many batches, the small
	// incarnations' first: the one batch of incarnation 2 is counted, and
	// the rest of the budget goes to incarnation 1.
	rows, err := in.Registrations(f.ctx)
	if err != nil || len(rows) != 2 {
		t.Fatalf("registrations %+v, %v", rows, err)
	}
	wantOps = 2*(inspect.MaxCountedBatches-1) + total - (inspect.MaxCountedBatches - 1)
	if r := rows[0]; r.Incarnation != 1 || r.Pending != wantOps || !r.PendingLowerBound {
		t.Errorf("incarnation 1: %+v, want %d pending, a lower bound", r, wantOps)
	}
	if r := rows[1]; r.Incarnation != 2 || r.Pending != 1 || r.PendingLowerBound {
		t.Errorf("incarnation 2: %+v, want 1 pending, exact", r)
	}
}

// A token that is not a NextToken of the same listing, and a negative size,
// are refused with errors naming the field.
func TestBadPageRequests(t *testing.T) {
	f := newFixture(t, "t")
	f.register([]string{"a", "b"}, func(string) string { return "h" })
	f.submit(pendingBatch{name: "a", inc: 1, keys: []string{"k1", "k2"}})
	in := f.inspector()
	regPage, err := in.RegistrationsPage(f.ctx, inspect.PageRequest{Size: 1})
	if err != nil || regPage.NextToken == "" {
		t.Fatalf("%+v %v", regPage, err)
	}
	opsPage, err := in.OpsPage(f.ctx, inspect.PageRequest{Size: 1})
	if err != nil || opsPage.NextToken == "" {
		t.Fatalf("%+v %v", opsPage, err)
	}
	bad := map[string]string{
		"garbage":            "not a token!",
		"base64 of nothing":  "AAAA",
		"truncated":          regPage.NextToken[:len(regPage.NextToken)-2],
		"with a byte more":   regPage.NextToken + "A",
		"too long":           strings.Repeat("A", 3000),
		"other listing":      opsPage.NextToken,
		"unknown version":    "Anr",
		"registrations kind": "AXIB", // version 1, 'r', a name length with no name
	}
	for what, tok := range bad {
		_, err := in.RegistrationsPage(f.ctx, inspect.PageRequest{Token: tok})
		var fe *config.FieldError
		if !errors.Is(err, inspect.ErrBadPageToken) || !errors.Is(err, config.ErrBadConfig) || !errors.As(err, &fe) || fe.Field != "Token" {
			t.Errorf("registrations with %s token: %v", what, err)
		}
	}
	if _, err := in.OpsPage(f.ctx, inspect.PageRequest{Token: regPage.NextToken}); !errors.Is(err, inspect.ErrBadPageToken) {
		t.Errorf("ops with a registrations token: %v", err)
	}
	if _, err := in.OpsPage(f.ctx, inspect.PageRequest{Token: "AW8AAAA"}); !errors.Is(err, inspect.ErrBadPageToken) {
		t.Errorf("ops with revision 0: %v", err)
	}
	for _, call := range []func() error{
		func() error { _, err := in.RegistrationsPage(f.ctx, inspect.PageRequest{Size: -1}); return err },
		func() error { _, err := in.OpsPage(f.ctx, inspect.PageRequest{Size: -1}); return err },
	} {
		if err := call(); !errors.Is(err, inspect.ErrBadPageSize) {
			t.Errorf("negative size: %v", err)
		}
	}
	if err := (inspect.PageRequest{Token: regPage.NextToken, Size: 3}).Validate(); err != nil {
		t.Errorf("Validate of a good request: %v", err)
	}
}

// Names drawn from characters on both sides of '/' ('!', '-', '.', '0',
// 'a'), registered or not, with pending batches or not: every page size
// lists every row once, in name order (a fixed seed keeps it repeatable).
func TestRegistrationsPagesRandomNames(t *testing.T) {
	f := newFixture(t, "r")
	for range 10 {
		if _, err := f.cli.Put(f.ctx, "unrelated", "x"); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(7, 26))
	const alphabet = "!-.0a"
	names := map[string]bool{}
	for len(names) < 60 {
		b := make([]byte, 1+rng.IntN(4))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		names[string(b)] = true
	}
	var registered []string
	var want []string
	for _, n := range slices.Sorted(maps.Keys(names)) {
		var rows []string
		if rng.IntN(3) > 0 {
			inc := int64(2 + rng.IntN(5))
			f.submit(pendingBatch{name: n, inc: inc, keys: []string{"k"}})
			rows = append(rows, fmt.Sprintf("%s@%d draining pending 1", n, inc))
		}
		if rng.IntN(2) == 0 || len(rows) == 0 {
			registered = append(registered, n)
		}
		want = append(want, rows...)
	}
	incs := f.register(registered, func(string) string { return "h" })
	for _, n := range registered {
		want = append(want, fmt.Sprintf("%s@%d active pending 0", n, incs[n]))
	}
	slices.SortStableFunc(want, func(a, b string) int {
		an, _, _ := strings.Cut(a, "@")
		bn, _, _ := strings.Cut(b, "@")
		return strings.Compare(an, bn) // draining rows come first: their incarnations are older
	})
	in := f.inspector()
	// Reads of one and two keys meet "backlogs" at once: the gap mode of
	// the name lookup is exercised as much as the plain one.
	for _, read := range []int64{1, 2, 512} {
		restore := inspect.SetPendingNamesRead(read)
		for _, size := range []int{1, 2, 3, 5, 7, 100} {
			rows := allRegistrations(t, f.ctx, in, size)
			got := make([]string, len(rows))
			for i, r := range rows {
				got[i] = rowKey(r)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("read %d, page size %d, rows:\n%s\nwant:\n%s", read, size, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
		restore()
	}
}
