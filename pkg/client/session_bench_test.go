package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSessionLeaseLoss measures one forced lease loss under 1000
// goroutines: each submits once, the lease is revoked from outside, and each
// submits again. It reports the re-registrations the loss caused, the time
// from the revocation to the last goroutine's second submission returning a
// token, and the submissions refused as expired. "session" shares one
// Session; "naive" shares one Caller and lets every goroutine whose
// submission is refused as expired register the name again itself. No
// leader runs, so the drain barrier is off for both.
//
//	go test -bench Session -run '^$' ./pkg/client/
func BenchmarkSessionLeaseLoss(b *testing.B) {
	const goroutines = 1000
	e := newEnv(b)
	var round atomic.Int64
	for _, mode := range []string{"session", "naive"} {
		b.Run(mode, func(b *testing.B) {
			var regs, expired int64
			var total time.Duration
			for range b.N {
				name := fmt.Sprintf("bench-%s-%d", mode, round.Add(1))
				var r lossResult
				if mode == "session" {
					r = sessionLoss(b, e, name, goroutines)
				} else {
					r = naiveLoss(b, e, name, goroutines)
				}
				regs += r.registrations
				expired += r.expired
				total += r.elapsed
			}
			n := float64(b.N)
			b.ReportMetric(float64(regs)/n, "registrations/op")
			b.ReportMetric(float64(total.Milliseconds())/n, "loss-to-all-ok-ms/op")
			b.ReportMetric(float64(expired)/n, "expired-sends/op")
		})
	}
}

type lossResult struct {
	registrations int64 // re-registrations caused by the loss
	expired       int64 // submissions refused as expired
	elapsed       time.Duration
}

// twoRounds runs submit in n goroutines twice, calling lose between the
// rounds, and returns the time from lose to the end of the second round.
func twoRounds(b *testing.B, n int, submit func(i, round int) error, lose func()) time.Duration {
	b.Helper()
	b.StopTimer()
	var round1, all sync.WaitGroup
	round2 := make(chan struct{})
	errs := make([]error, 2*n)
	round1.Add(n)
	all.Add(n)
	for i := range n {
		go func() {
			defer all.Done()
			errs[i] = submit(i, 1)
			round1.Done()
			<-round2
			errs[n+i] = submit(i, 2)
		}()
	}
	round1.Wait()
	b.StartTimer()
	start := time.Now()
	lose()
	close(round2)
	all.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("submission %d: %v", i, err)
		}
	}
	return elapsed
}

func sessionLoss(b *testing.B, e *env, name string, n int) lossResult {
	s, err := e.c.NewSession(e.ctx, name, SessionConfig{TTL: 30 * time.Second, SkipDrain: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	elapsed := twoRounds(b, n, func(i, round int) error {
		_, err := s.Set(e.ctx, fmt.Sprintf("k%d", i), []byte{byte(round)}, 0)
		return err
	}, func() { e.revoke(b, s) })
	st := s.Stats()
	if st.Renewals != 1 {
		b.Fatalf("%d re-registrations, want 1", st.Renewals)
	}
	return lossResult{registrations: int64(st.Renewals), expired: int64(st.Expired), elapsed: elapsed}
}

// naive shares a Caller; any goroutine refused as expired registers again
// and publishes its incarnation if it is the newest.
type naive struct {
	c       *Client
	name    string
	cur     atomic.Pointer[Caller]
	regs    atomic.Int64
	expired atomic.Int64
	mu      sync.Mutex
	callers []*Caller
}

func (nv *naive) register(ctx context.Context) error {
	c, err := nv.c.Register(ctx, nv.name, RegisterConfig{TTL: 30 * time.Second})
	if err != nil {
		return err
	}
	nv.mu.Lock()
	nv.callers = append(nv.callers, c)
	nv.mu.Unlock()
	for {
		old := nv.cur.Load()
		if old != nil && old.Incarnation() > c.Incarnation() {
			return nil
		}
		if nv.cur.CompareAndSwap(old, c) {
			return nil
		}
	}
}

func (nv *naive) set(ctx context.Context, key string, value []byte) error {
	for {
		_, err := nv.cur.Load().Set(ctx, key, value, 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrExpired):
			nv.expired.Add(1)
			nv.regs.Add(1)
			if err := nv.register(ctx); err != nil {
				return err
			}
		case errors.Is(err, ErrSuperseded):
			// Another goroutine registered: use the newest incarnation.
		default:
			return err
		}
	}
}

func naiveLoss(b *testing.B, e *env, name string, n int) lossResult {
	nv := &naive{c: e.c, name: name}
	if err := nv.register(e.ctx); err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, c := range nv.callers {
			c.Close(context.Background())
		}
	}()
	elapsed := twoRounds(b, n, func(i, round int) error {
		return nv.set(e.ctx, fmt.Sprintf("k%d", i), []byte{byte(round)})
	}, func() {
		if _, err := e.cli.Revoke(e.ctx, nv.cur.Load().inc.LeaseID); err != nil {
			b.Fatal(err)
		}
	})
	return lossResult{registrations: nv.regs.Load(), expired: nv.expired.Load(), elapsed: elapsed}
}
