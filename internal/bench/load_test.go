package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}} {
		if got := percentile(lat, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p*100, got, c.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("empty: %v", got)
	}
	s := summarize([]time.Duration{3, 1, 2})
	if s.n != 3 || s.p50 != 2 || s.p99 != 3 || s.max != 3 {
		t.Errorf("summary %+v", s)
	}
}

// closedLoop counts successes and failures per worker, and stops starting
// operations once its context ends or its duration has passed.
func TestClosedLoopCountsAndStops(t *testing.T) {
	boom := errors.New("boom")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	r := closedLoop(ctx, 4, time.Hour, func(_ context.Context, w, i int) error {
		if calls.Add(1) == 40 {
			cancel()
		}
		if i%2 == 1 {
			return boom
		}
		return nil
	})
	if got := r.ops + r.errors; got != calls.Load() || got < 40 || !errors.Is(r.firstErr, boom) {
		t.Fatalf("%d calls counted as %d ops and %d errors, first %v", calls.Load(), r.ops, r.errors, r.firstErr)
	}
	if d := r.ops - r.errors; d < 0 || d > 4 {
		t.Errorf("each worker alternates: %d successes, %d failures", r.ops, r.errors)
	}
	if r.opsPerSec() <= 0 {
		t.Errorf("%v ops/s", r.opsPerSec())
	}
	m := measurement("x", 4, r)
	if m.Ops != r.ops || m.Errors != r.errors || m.Note == "" || m.P99Ms < m.P50Ms {
		t.Errorf("measurement %+v", m)
	}

	none := closedLoop(context.Background(), 4, 0, func(context.Context, int, int) error {
		t.Error("an operation started after the duration had passed")
		return nil
	})
	if none.ops != 0 || none.errors != 0 {
		t.Errorf("no time: %d ops, %d errors", none.ops, none.errors)
	}
}

func TestRatioOfNothingIsZero(t *testing.T) {
	if ratio(1, 0) != 0 || ratio(6, 3) != 2 {
		t.Fatal("ratio")
	}
}
