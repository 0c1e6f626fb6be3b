package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// The cookie check itself: only the current, not yet replaced incarnation
// re-registers; an older cookie retries under the newer incarnation.
func TestCompareCookie(t *testing.T) {
	for _, c := range []struct {
		cookie, current  int64
		renewing, failed bool
		want             action
	}{
		{cookie: 10, current: 10, want: actRenew},
		{cookie: 10, current: 20, want: actRetry},
		{cookie: 10, current: 10, renewing: true, want: actWait},
		{cookie: 10, current: 20, renewing: true, want: actWait},
		{cookie: 10, current: 10, failed: true, want: actFail},
		{cookie: 10, current: 20, renewing: true, failed: true, want: actFail},
	} {
		if got := compareCookie(c.cookie, c.current, c.renewing, c.failed); got != c.want {
			t.Errorf("compareCookie(%d, %d, renewing=%v, failed=%v) = %d, want %d",
				c.cookie, c.current, c.renewing, c.failed, got, c.want)
		}
	}
}

// A failed call that started under the old incarnation and arrives after
// the re-registration compares cookies and retries; it does not register
// again.
func TestSessionOldCookieAfterRenewalDoesNotReRegister(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	var log eventLog
	s := e.session(t, "svc", SessionConfig{SkipDrain: true, OnEvent: log.add})
	old := e.revoke(t, s)
	renewed := log.wait(t, EventRenewed, 1)[0]
	if renewed.Old != old || renewed.New <= old || renewed.New != s.Incarnation() {
		t.Fatalf("renewed event %+v, old %d, current %d", renewed, old, s.Incarnation())
	}

	if got := s.expired(old, tokenseq.ErrExpired); got != actRetry {
		t.Fatalf("old cookie after renewal: %d, want actRetry", got)
	}
	if _, err := s.Set(e.ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Registrations != 2 || st.Renewals != 1 {
		t.Fatalf("stats %+v, want 2 registrations, 1 renewal", st)
	}
	if w := h.collect(t); w.regPuts["svc"] != 2 {
		t.Fatalf("registration puts %d, want 2", w.regPuts["svc"])
	}
}

// G9 through the path a refusal takes: a submission is refused as expired
// under the old incarnation while the re-registration is held, and its
// refusal is delivered only once the name is registered again. The
// submission's cookie is the old incarnation, not the session's current
// one, so it resends under the new incarnation at once and starts no
// second re-registration (which would revoke the live incarnation's lease).
func TestSessionLateExpiredRefusalRetriesUnderTheNewIncarnation(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	var (
		log       eventLog
		first     atomic.Bool
		sending   = make(chan int64, 1) // the first send, about to go out
		sendNow   = make(chan struct{}) // closed once the re-registration is held
		refusedCh = make(chan error, 1) // what etcd answered the first send
		deliver   = make(chan struct{}) // closed once the name is registered again
		entered   = make(chan int64, 1) // the re-registration, held
		gate      = make(chan struct{}) // closed to let it go on
	)
	wait := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		case <-e.ctx.Done():
			return false
		}
	}
	send := func(ctx context.Context, req tokenseq.Request, submit func() (Token, error)) (Token, error) {
		if !first.CompareAndSwap(false, true) {
			return submit()
		}
		sending <- req.Incarnation
		if !wait(sendNow) {
			return tokenseq.Zero, e.ctx.Err()
		}
		tok, err := submit()
		refusedCh <- err
		if !wait(deliver) {
			return tokenseq.Zero, e.ctx.Err()
		}
		return tok, err
	}
	before := func(old int64) {
		select {
		case entered <- old:
		default:
		}
		wait(gate)
	}
	s := e.session(t, "svc", SessionConfig{SkipDrain: true, OnEvent: log.add, hooks: &sessionHooks{send: send, beforeRegister: before}})
	type result struct {
		tok Token
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := s.Set(e.ctx, "k", []byte("v"), 0)
		done <- result{tok, err}
	}()
	old := <-sending
	if got := e.revoke(t, s); got != old {
		t.Fatalf("revoked incarnation %d, the submission was sent under %d", got, old)
	}
	if got := <-entered; got != old {
		t.Fatalf("re-registering %d, want %d", got, old)
	}
	close(sendNow)
	if err := <-refusedCh; !errors.Is(err, ErrExpired) {
		t.Fatalf("the submission under the revoked incarnation: %v, want it refused as expired", err)
	}
	close(gate)
	renewed := log.wait(t, EventRenewed, 1)[0]
	cur := s.Incarnation()
	if renewed.Old != old || renewed.New != cur || cur <= old {
		t.Fatalf("renewed %+v, old %d, current %d", renewed, old, cur)
	}
	close(deliver)
	r := <-done
	if r.err != nil {
		t.Fatalf("submission refused late: %v, want it resent and accepted", r.err)
	}
	if r.tok.Revision <= cur {
		t.Fatalf("token %s not after the new incarnation %d", r.tok, cur)
	}
	if got := s.Incarnation(); got != cur {
		t.Fatalf("incarnation %d after the late refusal, want %d: the name was registered again", got, cur)
	}
	if st := s.Stats(); st.Registrations != 2 || st.Renewals != 1 || st.Expired != 1 || st.Retries != 1 || st.Accepted != 1 {
		t.Fatalf("stats %+v, want 2 registrations, 1 renewal, 1 expired, 1 retry, 1 accepted", st)
	}
	if n := len(log.of(EventLeaseLost)); n != 1 {
		t.Fatalf("%d lease-lost events, want 1", n)
	}
	if w := h.collect(t); w.regPuts["svc"] != 2 {
		t.Fatalf("registration puts %d, want 2", w.regPuts["svc"])
	}
}

// Calls that fail with the same cookie while a re-registration is under way
// wait for it instead of starting another one.
func TestSessionConcurrentFailuresStartOneRenewal(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	entered := make(chan int64, 1)
	gate := make(chan struct{})
	var log eventLog
	s := e.session(t, "svc", SessionConfig{
		SkipDrain: true, OnEvent: log.add,
		hooks: &sessionHooks{beforeRegister: func(old int64) {
			entered <- old
			<-gate
		}},
	})
	old := e.revoke(t, s)
	if got := <-entered; got != old {
		t.Fatalf("re-registering %d, want %d", got, old)
	}
	const n = 100
	got := make([]action, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = s.expired(old, tokenseq.ErrExpired)
		}()
	}
	wg.Wait()
	for i, a := range got {
		if a != actWait {
			t.Fatalf("call %d: %d, want actWait", i, a)
		}
	}
	close(gate)
	log.wait(t, EventRenewed, 1)
	if st := s.Stats(); st.Renewals != 1 {
		t.Fatalf("renewals %d, want 1", st.Renewals)
	}
	if w := h.collect(t); w.regPuts["svc"] != 2 {
		t.Fatalf("registration puts %d, want 2", w.regPuts["svc"])
	}
}

// If another process registers the name while the session is about to
// re-register, the session backs off: it does not overwrite the newer
// incarnation, and ends superseded.
func TestSessionBacksOffFromOverwritingConcurrentRegistration(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	other, err := New(Config{Etcd: e.cli, Namespace: "t"})
	if err != nil {
		t.Fatal(err)
	}
	var theirs atomic.Pointer[Caller]
	var log eventLog
	s := e.session(t, "svc", SessionConfig{
		SkipDrain: true, OnEvent: log.add,
		hooks: &sessionHooks{beforeRegister: func(int64) {
			if theirs.Load() != nil {
				return
			}
			c, err := other.Register(e.ctx, "svc", RegisterConfig{TTL: 5 * time.Second})
			if err != nil {
				t.Errorf("other registration: %v", err)
				return
			}
			t.Cleanup(func() { c.Close(context.Background()) })
			theirs.Store(c)
		}},
	})
	e.revoke(t, s)
	log.wait(t, EventFailed, 1)
	if err := s.Err(); !errors.Is(err, ErrSessionSuperseded) || !errors.Is(err, ErrSuperseded) {
		t.Fatalf("session error %v", err)
	}
	if _, err := s.Set(e.ctx, "k", []byte("v"), 0); !errors.Is(err, ErrSessionSuperseded) {
		t.Fatalf("submit after backing off: %v", err)
	}
	reg, ok, err := e.c.reg.Get(e.ctx, "svc")
	if err != nil || !ok || reg.Incarnation != theirs.Load().Incarnation() {
		t.Fatalf("registration %+v %v %v, want the other process's incarnation %d", reg, ok, err, theirs.Load().Incarnation())
	}
	if st := s.Stats(); st.Renewals != 0 || st.Registrations != 1 {
		t.Fatalf("stats %+v", st)
	}
	if w := h.collect(t); w.regPuts["svc"] != 2 {
		t.Fatalf("registration puts %d, want 2 (ours, theirs)", w.regPuts["svc"])
	}
}

// G9 under load: 200 goroutines share a session whose lease is revoked
// between two rounds of submissions. The name is registered again exactly
// once, every submission returns a token, and every batch is stored once
// and applied once: none lost, none doubled. In "in-flight" every second
// submission has already been handed to etcd under the old incarnation when
// the lease goes, so all 200 are refused at the same moment and go through
// the cookie compare; in "after-loss" they start once the lease is gone.
func TestSessionManyGoroutinesOneRenewal(t *testing.T) {
	for _, inFlight := range []bool{true, false} {
		t.Run(map[bool]string{true: "in-flight", false: "after-loss"}[inFlight], func(t *testing.T) {
			testManyGoroutines(t, inFlight)
		})
	}
}

func testManyGoroutines(t *testing.T, inFlight bool) {
	e := newEnv(t)
	nd, mc := e.startNode(t)
	h := e.history(t)
	var log eventLog
	const n = 200
	var (
		round1, all, arrived sync.WaitGroup
		round2               = make(chan struct{})
		gate                 = make(chan struct{})
		holding              atomic.Int64 // the incarnation whose round-2 sends are held
		toks                 = make([]Token, 2*n)
		errs                 = make([]error, 2*n)
	)
	hold := func(ctx context.Context, req tokenseq.Request, submit func() (Token, error)) (Token, error) {
		if req.Incarnation == holding.Load() {
			arrived.Done()
			<-gate
		}
		return submit()
	}
	s := e.session(t, "many", SessionConfig{OnEvent: log.add, hooks: &sessionHooks{send: hold}}) // WaitDrained on: a leader runs
	round1.Add(n)
	all.Add(n)
	for i := range n {
		go func() {
			defer all.Done()
			key := fmt.Sprintf("k%03d", i)
			toks[i], errs[i] = s.Set(e.ctx, key, []byte("round1"), 0)
			round1.Done()
			<-round2
			toks[n+i], errs[n+i] = s.Set(e.ctx, key, []byte(fmt.Sprintf("round2-%d", i)), 0)
		}()
	}
	round1.Wait()
	var old int64
	if inFlight {
		arrived.Add(n)
		holding.Store(s.Incarnation())
		close(round2)
		arrived.Wait() // all 200 are about to send under the old incarnation
		old = e.revoke(t, s)
		close(gate)
	} else {
		old = e.revoke(t, s)
		close(gate)
		close(round2)
	}
	all.Wait()

	seen := map[Token]bool{}
	var maxTok Token
	for i, err := range errs {
		if err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
		if seen[toks[i]] {
			t.Fatalf("token %v returned twice", toks[i])
		}
		seen[toks[i]] = true
		if maxTok.Less(toks[i]) {
			maxTok = toks[i]
		}
	}
	cur := s.Incarnation()
	st := s.Stats()
	t.Logf("stats after the lease loss: %+v", st)
	if st.Registrations != 2 || st.Renewals != 1 || st.Accepted != 2*n || st.Lookups != 0 {
		t.Fatalf("stats %+v", st)
	}
	if inFlight && (st.Expired != n || st.Retries != n) {
		t.Fatalf("stats %+v: want all %d in-flight submissions refused as expired and retried once", st, n)
	}
	if ev := log.of(EventRenewed); len(ev) != 1 || ev[0].Old != old || ev[0].New != cur {
		t.Fatalf("renewed events %+v, want one %d -> %d", ev, old, cur)
	}

	if err := s.WaitApplied(e.ctx, maxTok); err != nil {
		t.Fatal(err)
	}
	if p := e.count(t, e.layout.OpsPrefix()); p != 0 {
		t.Fatalf("%d batches still pending after the last token was applied", p)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return nd.Stats.Batches.Load() >= 2*n },
		"applier batches %d, want %d", nd.Stats.Batches.Load(), 2*n)
	if got := nd.Stats.Batches.Load(); got != 2*n {
		t.Fatalf("applier applied %d batches, want %d", got, 2*n)
	}

	w := h.collect(t)
	if w.regPuts["many"] != 2 {
		t.Fatalf("registration puts %d, want 2 (first + one re-registration)", w.regPuts["many"])
	}
	if len(w.batches) != 2*n {
		t.Fatalf("%d batches stored, want %d", len(w.batches), 2*n)
	}
	perInc := map[int64]int{}
	for _, b := range w.batches {
		perInc[b.Incarnation]++
	}
	if perInc[old] != n || perInc[cur] != n {
		t.Fatalf("batches per incarnation %v, want %d under %d and %d under %d", perInc, n, old, n, cur)
	}
	items, err := memcache.New(mc.Addr).GetMulti(keysN(n))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		key := fmt.Sprintf("k%03d", i)
		if it := items[key]; it == nil || string(it.Value) != fmt.Sprintf("round2-%d", i) {
			t.Fatalf("memcached %s = %v", key, it)
		}
	}
}

func keysN(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%03d", i)
	}
	return keys
}

// sendLog counts the submissions actually sent, per incarnation.
type sendLog struct {
	mu    sync.Mutex
	byInc map[int64]int
}

func (l *sendLog) hook(ctx context.Context, req tokenseq.Request, submit func() (Token, error)) (Token, error) {
	l.mu.Lock()
	if l.byInc == nil {
		l.byInc = map[int64]int{}
	}
	l.byInc[req.Incarnation]++
	l.mu.Unlock()
	return submit()
}

func (l *sendLog) sent(inc int64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byInc[inc]
}

// Once the session knows its incarnation is dead, submissions wait for the
// re-registration: none is sent under the dead incarnation, none is refused.
// The window is held open by the drain barrier: the old incarnation has a
// pending batch and no leader runs until the test starts one.
func TestSessionSubmissionsWaitDuringRenewal(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	var log eventLog
	var sends sendLog
	s := e.session(t, "svc", SessionConfig{OnEvent: log.add, hooks: &sessionHooks{send: sends.hook}})
	if _, err := s.Set(e.ctx, "first", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	old := e.revoke(t, s)
	// The old incarnation's batch is not under its lease: it outlives it
	// (G4), and holds the drain barrier shut.
	if p := e.count(t, e.layout.OpsPrefix()); p != 1 {
		t.Fatalf("%d batches pending after the lease was revoked, want the old incarnation's one", p)
	}
	log.wait(t, EventLeaseLost, 1)

	const n = 50
	errs := make([]error, n)
	toks := make([]Token, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = s.Set(e.ctx, fmt.Sprintf("k%d", i), []byte("v"), 0)
		}()
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return s.Stats().Waits == n }, "%d waiting submissions", n)
	if got := sends.sent(old); got != 1 {
		t.Fatalf("%d submissions sent under the dead incarnation, want only the first", got)
	}
	if got := s.Stats().Expired; got != 0 {
		t.Fatalf("%d submissions refused as expired, want 0", got)
	}

	e.startNode(t) // the old batch is applied, the barrier opens
	wg.Wait()
	cur := s.Incarnation()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
		if toks[i].Revision <= cur {
			t.Fatalf("token %v not after the new incarnation %d", toks[i], cur)
		}
	}
	st := s.Stats()
	if st.Expired != 0 || st.Retries != 0 || st.Renewals != 1 {
		t.Fatalf("stats %+v", st)
	}
	if got := sends.sent(old); got != 1 {
		t.Fatalf("%d sent under the dead incarnation", got)
	}
	if got := sends.sent(cur); got != n {
		t.Fatalf("%d sent under the new incarnation, want %d", got, n)
	}
	w := h.collect(t)
	if len(w.batches) != n+1 || w.regPuts["svc"] != 2 {
		t.Fatalf("%d batches, %d registrations; want %d, 2", len(w.batches), w.regPuts["svc"], n+1)
	}
}

// A submission waiting for a re-registration honours its context, and Close
// releases the others.
func TestSessionWaitHonoursContext(t *testing.T) {
	e := newEnv(t)
	var log eventLog
	var sends sendLog
	s := e.session(t, "svc", SessionConfig{OnEvent: log.add, hooks: &sessionHooks{send: sends.hook}})
	if _, err := s.Set(e.ctx, "first", []byte("v"), 0); err != nil { // stays pending: no leader
		t.Fatal(err)
	}
	e.revoke(t, s)
	log.wait(t, EventLeaseLost, 1)

	cctx, cancel := context.WithCancel(e.ctx)
	cancelled := make(chan error, 1)
	go func() {
		_, err := s.Set(cctx, "k", []byte("v"), 0)
		cancelled <- err
	}()
	testenv.Eventually(t, 30*time.Second, func() bool { return s.Stats().Waits == 1 }, "a waiting submission")
	cancel()
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait returned %v", err)
		}
	case <-time.After(10 * time.Second):
		// Nothing else can end the wait: no leader runs to drain the
		// pending batch.
		t.Fatal("cancelled wait did not return")
	}

	dctx, dcancel := context.WithTimeout(e.ctx, 50*time.Millisecond)
	defer dcancel()
	if _, err := s.Set(dctx, "k", []byte("v"), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline while waiting: %v", err)
	}

	closed := make(chan error, 1)
	go func() {
		_, err := s.Set(e.ctx, "k", []byte("v"), 0)
		closed <- err
	}()
	testenv.Eventually(t, 30*time.Second, func() bool { return s.Stats().Waits == 3 }, "a third waiting submission")
	if err := s.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("waiting submission after Close: %v", err)
	}
	if got := len(sends.byInc); got != 1 {
		t.Fatalf("sent under %d incarnations, want only the first", got)
	}
}

// Superseded is not expired: a session whose name another live session
// registers does not fight back. Every call gets the final error, Done is
// closed, and the name is registered exactly twice in all.
func TestSessionSupersededIsFinal(t *testing.T) {
	e := newEnv(t)
	h := e.history(t)
	var logA eventLog
	a := e.session(t, "svc", SessionConfig{SkipDrain: true, OnEvent: logA.add})
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	started := make(chan struct{}, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				_, err := a.Set(e.ctx, fmt.Sprintf("a%d", i), []byte("v"), 0)
				if j == 0 {
					started <- struct{}{}
				}
				if err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	for range n {
		<-started
	}
	b := e.session(t, "svc", SessionConfig{SkipDrain: true})
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrSessionSuperseded) || !errors.Is(err, ErrSuperseded) || errors.Is(err, ErrExpired) {
			t.Fatalf("goroutine %d ended with %v", i, err)
		}
	}
	select {
	case <-a.Done():
	default:
		t.Fatal("Done not closed")
	}
	if err := a.Err(); !errors.Is(err, ErrSessionSuperseded) {
		t.Fatalf("Err() = %v", err)
	}
	failed := logA.wait(t, EventFailed, 1)
	if len(failed) != 1 || !errors.Is(failed[0].Err, ErrSessionSuperseded) {
		t.Fatalf("failed events %+v", failed)
	}
	if _, err := a.Set(e.ctx, "late", []byte("v"), 0); !errors.Is(err, ErrSessionSuperseded) {
		t.Fatalf("late submission: %v", err)
	}
	if _, err := b.Set(e.ctx, "b", []byte("v"), 0); err != nil {
		t.Fatalf("the superseding session: %v", err)
	}
	if st := a.Stats(); st.Renewals != 0 || st.Registrations != 1 {
		t.Fatalf("superseded session stats %+v", st)
	}
	// Closing the superseded session releases its lease, not b's name.
	if err := a.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	reg, ok, err := e.c.reg.Get(e.ctx, "svc")
	if err != nil || !ok || reg.Incarnation != b.Incarnation() {
		t.Fatalf("registration after a.Close: %+v %v %v", reg, ok, err)
	}
	if w := h.collect(t); w.regPuts["svc"] != 2 {
		t.Fatalf("registration puts %d, want exactly 2", w.regPuts["svc"])
	}
}

// Bad input is refused at once, nothing is sent.
func TestSessionInvalidInput(t *testing.T) {
	e := newEnv(t)
	var sends sendLog
	s := e.session(t, "svc", SessionConfig{SkipDrain: true, hooks: &sessionHooks{send: sends.hook}})
	if _, err := s.Set(e.ctx, "bad key", nil, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v", err)
	}
	if _, err := s.Submit(e.ctx); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty batch: %v", err)
	}
	if len(sends.byInc) != 0 {
		t.Fatalf("sent %v", sends.byInc)
	}
	if _, err := e.c.NewSession(e.ctx, "a/b", SessionConfig{}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
}
