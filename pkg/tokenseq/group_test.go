package tokenseq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// result is the outcome of one submission.
type result struct {
	tok tokenseq.Token
	err error
}

// queueAndRelease holds the submitter's transaction slots, makes every
// request concurrently, waits until all are queued, then releases them so
// they are sent together, and returns their outcomes in request order.
func queueAndRelease(t *testing.T, f *fixture, sub *tokenseq.Submitter, reqs []tokenseq.Request) []result {
	t.Helper()
	release := tokenseq.HoldSlots(sub)
	out := make([]result, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].tok, out[i].err = sub.SubmitRequest(f.ctx, req)
		}()
		// Queue them in request order: the group keeps that order.
		testenv.Eventually(t, 10*time.Second, func() bool { return tokenseq.Queued(sub) == i+1 }, "submission %d queued", i)
	}
	release()
	wg.Wait()
	return out
}

func TestGroupCommitSharesOneTransaction(t *testing.T) {
	f := newFixture(t)
	a, b := f.register(t, "a"), f.register(t, "b")
	var reqs []tokenseq.Request
	for i := range 10 {
		inc := a
		if i%2 == 1 {
			inc = b
		}
		reqs = append(reqs, tokenseq.Request{Name: inc.Name, Incarnation: inc.Incarnation, ID: fmt.Sprintf("id-%d", i),
			Ops: []ops.Op{ops.Set("k", []byte(fmt.Sprint(i)), 0)}})
	}
	out := queueAndRelease(t, f, f.sub, reqs)
	for i, r := range out {
		if r.err != nil {
			t.Fatalf("submission %d: %v", i, r.err)
		}
		want := tokenseq.Token{Revision: out[0].tok.Revision, Index: uint32(i)}
		if r.tok != want {
			t.Errorf("submission %d: token %s, want %s (one transaction, queue order)", i, r.tok, want)
		}
	}
	// Each stored record carries its index, so the token can be told from
	// etcd alone, and a resend of any of them returns the same token.
	for i, req := range reqs {
		tok, err := f.sub.Lookup(f.ctx, req)
		if err != nil || tok != out[i].tok {
			t.Errorf("lookup %d: %s, %v; want %s", i, tok, err, out[i].tok)
		}
		tok, err = f.sub.SubmitRequest(f.ctx, req)
		if err != nil || tok != out[i].tok {
			t.Errorf("resend %d: %s, %v; want %s", i, tok, err, out[i].tok)
		}
	}
	if n := f.pendingBatches(t); n != 10 {
		t.Fatalf("%d batches stored, want 10", n)
	}
}

func TestGroupMemberRefusedOthersAccepted(t *testing.T) {
	f := newFixture(t)
	old := f.register(t, "a")
	cur := f.register(t, "a") // supersedes old
	b := f.register(t, "b")
	req := func(name string, inc int64, id string) tokenseq.Request {
		return tokenseq.Request{Name: name, Incarnation: inc, ID: id, Ops: []ops.Op{ops.Delete("k-" + id)}}
	}
	// A resend of a batch already stored, in the group with the others.
	stored := req("b", b.Incarnation, "stored")
	first, err := f.sub.SubmitRequest(f.ctx, stored)
	if err != nil {
		t.Fatal(err)
	}
	reqs := []tokenseq.Request{
		req("b", b.Incarnation, "b1"),
		req("a", old.Incarnation, "stale"), // superseded: must be refused
		stored,
		req("b", b.Incarnation, "b2"),
		req("a", cur.Incarnation, "a1"),
		req("b", b.Incarnation, "b1"), // the same id twice: stored once
	}
	out := queueAndRelease(t, f, f.sub, reqs)
	var refused *tokenseq.RefusedError
	if !errors.As(out[1].err, &refused) || !errors.Is(out[1].err, tokenseq.ErrSuperseded) || refused.Current != cur.Incarnation {
		t.Fatalf("stale incarnation in a group: %v, want superseded by %d", out[1].err, cur.Incarnation)
	}
	if out[2].err != nil || out[2].tok != first {
		t.Fatalf("resend in a group: %s, %v; want %s", out[2].tok, out[2].err, first)
	}
	for _, i := range []int{0, 3, 4, 5} {
		if out[i].err != nil {
			t.Fatalf("submission %d: %v", i, out[i].err)
		}
	}
	if out[5].tok != out[0].tok {
		t.Fatalf("the same id twice: tokens %s and %s", out[0].tok, out[5].tok)
	}
	if !out[0].tok.Less(out[3].tok) {
		t.Fatalf("queue order not kept: %s then %s", out[0].tok, out[3].tok)
	}
	// stored, b1, b2, a1: nothing of the stale incarnation.
	if n := f.pendingBatches(t); n != 4 {
		t.Fatalf("%d batches stored, want 4", n)
	}
	if resp, err := f.cli.Get(f.ctx, f.layout.Batch("a", old.Incarnation, "stale")); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the refused batch was stored: %v %v", resp, err)
	}
}

// A group transaction compares each name's registration once, so it must
// never carry one name under two incarnations (G1). Here the current
// incarnation's submission is queued first and a superseded incarnation's
// right behind it, in the same group: the stale one must go in a
// transaction of its own, whose compare refuses it, and never ride on the
// current one's compare. Without leases (a Caller) the incarnation alone
// keeps them apart; with them (a Session), the lease too.
func TestGroupNeverCarriesAStaleIncarnationBehindTheCurrentOne(t *testing.T) {
	for _, withLease := range []bool{false, true} {
		t.Run(map[bool]string{false: "without-lease", true: "with-lease"}[withLease], func(t *testing.T) {
			f := newFixture(t)
			old := f.register(t, "a")
			cur := f.register(t, "a") // supersedes old
			req := func(inc *registry.Incarnation, id string) tokenseq.Request {
				r := tokenseq.Request{Name: "a", Incarnation: inc.Incarnation, ID: id, Ops: []ops.Op{ops.Set("k", []byte(id), 0)}}
				if withLease {
					r.Lease = inc.LeaseID
				}
				return r
			}
			reqs := []tokenseq.Request{req(cur, "current-1"), req(old, "stale"), req(cur, "current-2")}
			out := queueAndRelease(t, f, f.sub, reqs)
			var refused *tokenseq.RefusedError
			if !errors.As(out[1].err, &refused) || !errors.Is(out[1].err, tokenseq.ErrSuperseded) || refused.Current != cur.Incarnation {
				t.Fatalf("stale incarnation queued behind the current one: token %s, %v; want superseded by %d",
					out[1].tok, out[1].err, cur.Incarnation)
			}
			for _, i := range []int{0, 2} {
				if out[i].err != nil {
					t.Fatalf("current incarnation's submission %d: %v", i, out[i].err)
				}
			}
			if out[0].tok.Revision != out[2].tok.Revision {
				t.Fatalf("the current incarnation's submissions %s and %s did not share the group", out[0].tok, out[2].tok)
			}
			if resp, err := f.cli.Get(f.ctx, f.layout.Batch("a", old.Incarnation, "stale")); err != nil || len(resp.Kvs) != 0 {
				t.Fatalf("the refused batch was stored: %v %v", resp, err)
			}
			if n := f.pendingBatches(t); n != 2 {
				t.Fatalf("%d batches stored, want 2", n)
			}
		})
	}
}

func TestGroupWithAGoneLeaseSettlesEachAlone(t *testing.T) {
	f := newFixture(t)
	a, b := f.register(t, "a"), f.register(t, "b")
	// b's lease is revoked: its receipt cannot be written, which makes etcd
	// reject the whole transaction before applying it.
	if _, err := f.cli.Revoke(f.ctx, b.LeaseID); err != nil {
		t.Fatal(err)
	}
	reqs := []tokenseq.Request{
		{Name: "a", Incarnation: a.Incarnation, ID: "a1", Lease: a.LeaseID, Ops: []ops.Op{ops.Delete("x")}},
		{Name: "b", Incarnation: b.Incarnation, ID: "b1", Lease: b.LeaseID, Ops: []ops.Op{ops.Delete("y")}},
		{Name: "a", Incarnation: a.Incarnation, ID: "a2", Lease: a.LeaseID, Ops: []ops.Op{ops.Delete("z")}},
	}
	out := queueAndRelease(t, f, f.sub, reqs)
	if out[0].err != nil || out[2].err != nil {
		t.Fatalf("live incarnation's submissions: %v, %v", out[0].err, out[2].err)
	}
	if !errors.Is(out[1].err, tokenseq.ErrExpired) {
		t.Fatalf("submission under a revoked lease: %v, want expired", out[1].err)
	}
	for _, i := range []int{0, 2} {
		resp, err := f.cli.Get(f.ctx, f.layout.Receipt("a", a.Incarnation, reqs[i].ID))
		if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != a.LeaseID {
			t.Fatalf("receipt of %s: %v %v", reqs[i].ID, resp, err)
		}
	}
}

func TestGroupCommitOff(t *testing.T) {
	f := newFixture(t)
	sub := newSubmitter(t, tokenseq.SubmitterConfig{Etcd: f.cli, Layout: f.layout, MaxGroupBatches: 1})
	a := f.register(t, "a")
	var wg sync.WaitGroup
	toks := make([]tokenseq.Token, 8)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := sub.Submit(f.ctx, "a", a.Incarnation, "", []ops.Op{ops.Delete("k")})
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, tok := range toks {
		if tok.Index != 0 || seen[tok.Revision] {
			t.Fatalf("with group commit off, tokens %v share transactions", toks)
		}
		seen[tok.Revision] = true
	}
}

func TestQueuedSubmissionWhoseCallerGaveUpIsNotSent(t *testing.T) {
	f := newFixture(t)
	a := f.register(t, "a")
	release := tokenseq.HoldSlots(f.sub)
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() {
		_, err := f.sub.Submit(ctx, "a", a.Incarnation, "gave-up", []ops.Op{ops.Delete("k")})
		done <- err
	}()
	testenv.Eventually(t, 10*time.Second, func() bool { return tokenseq.Queued(f.sub) == 1 }, "submission queued")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit = %v, want context.Canceled", err)
	}
	release()
	if _, err := f.sub.Submit(f.ctx, "a", a.Incarnation, "after", []ops.Op{ops.Delete("k")}); err != nil {
		t.Fatal(err)
	}
	if n := f.pendingBatches(t); n != 1 {
		t.Fatalf("%d batches stored, want only the later one", n)
	}
}

// A group whose transaction failed stored nothing; when the read that says
// why fails too (here the history it reads is compacted away), its members
// are sent again, each alone, and get real answers, not an unknown
// outcome.
func TestGroupWhoseFailureCannotBeReadIsSentAgainAlone(t *testing.T) {
	f := newFixture(t)
	old := f.register(t, "a")
	cur := f.register(t, "a") // supersedes old
	b := f.register(t, "b")
	var compacted atomic.Int32
	tokenseq.OnFailedTransaction(f.sub, func(rev int64) {
		if compacted.Add(1) != 1 {
			return
		}
		resp, err := f.cli.Put(f.ctx, "unrelated", "x")
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := f.cli.Compact(f.ctx, resp.Header.Revision); err != nil {
			t.Error(err)
		}
	})
	reqs := []tokenseq.Request{
		{Name: "b", Incarnation: b.Incarnation, ID: "b1", Ops: []ops.Op{ops.Delete("x")}},
		{Name: "a", Incarnation: old.Incarnation, ID: "stale", Ops: []ops.Op{ops.Delete("y")}},
		{Name: "a", Incarnation: cur.Incarnation, ID: "a1", Ops: []ops.Op{ops.Delete("z")}},
	}
	out := queueAndRelease(t, f, f.sub, reqs)
	if compacted.Load() == 0 {
		t.Fatal("no transaction failed: the group did not hold the stale incarnation")
	}
	if out[0].err != nil || out[2].err != nil {
		t.Fatalf("live incarnations' submissions: %v, %v", out[0].err, out[2].err)
	}
	if !errors.Is(out[1].err, tokenseq.ErrSuperseded) {
		t.Fatalf("stale incarnation: %v, want superseded", out[1].err)
	}
	if n := f.pendingBatches(t); n != 2 {
		t.Fatalf("%d batches stored, want 2", n)
	}
}
