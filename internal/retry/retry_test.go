package retry

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterUpToMax(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	interval := b.Min
	for i := 0; i < 10; i++ {
		d := b.Next()
		lo := time.Duration(float64(interval) * (1 - Jitter))
		hi := time.Duration(float64(interval)*(1+Jitter)) + 1
		if d < lo || d > hi {
			t.Fatalf("wait %d = %v, want within [%v, %v]", i, d, lo, hi)
		}
		if interval *= 2; interval > b.Max {
			interval = b.Max
		}
	}
	b.Reset()
	if d := b.Next(); d > time.Duration(float64(b.Min)*(1+Jitter))+1 {
		t.Fatalf("after Reset: %v, want about Min", d)
	}
}

func TestBackoffWaitsDiffer(t *testing.T) {
	seen := map[time.Duration]bool{}
	for i := 0; i < 20; i++ {
		b := Backoff{Min: time.Second, Max: time.Second}
		seen[b.Next()] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 first waits were all %v: no jitter", seen)
	}
}
