package bench

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// Odd runs go in reverse order, and the first error stops the run.
func TestInTurnReversesEveryOtherRun(t *testing.T) {
	var got []string
	step := func(name string) func() error {
		return func() error { got = append(got, name); return nil }
	}
	for run := range 3 {
		if err := inTurn(run, step("a"), step("b"), step("c")); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"a", "b", "c", "c", "b", "a", "a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	boom := errors.New("boom")
	got = nil
	err := inTurn(1, step("a"), func() error { return boom }, step("c"))
	if !errors.Is(err, boom) || !slices.Equal(got, []string{"c"}) {
		t.Fatalf("err %v after %v; want boom after [c]", err, got)
	}
}

// The median run is picked by throughput and keeps its own latencies; each
// ratio pairs ours and the baseline run by run and takes the median.
func TestComparisonMedians(t *testing.T) {
	c := newComparison()
	// Run 2 is slow for both: a noisy moment hits ours and the baseline
	// alike, and pairing keeps it from deciding the ratio.
	for _, r := range []struct{ ours, base, oursP99 float64 }{{200, 100, 5}, {90, 50, 9}, {330, 150, 4}} {
		c.add(Measurement{What: "ours", OpsPerSec: r.ours, P99Ms: r.oursP99, Errors: 1},
			Measurement{What: "base", OpsPerSec: r.base, P99Ms: 2})
	}
	m := c.median("ours")
	if m.OpsPerSec != 200 || m.P99Ms != 5 {
		t.Fatalf("median run %+v, want the 200 ops/s one", m)
	}
	if !slices.Equal(m.RunsOpsPerSec, []float64{200, 90, 330}) || m.Errors != 3 {
		t.Fatalf("runs %v, errors %d; want every run in order and every run's errors", m.RunsOpsPerSec, m.Errors)
	}
	if !strings.Contains(m.Note, "median of 3 runs by ops/s: 200, 90, 330") {
		t.Fatalf("note %q", m.Note)
	}
	r := c.ratio("ours", "base", opsPerSec)
	if r.Value != 2 || !slices.Equal(r.Runs, []float64{2, 1.8, 2.2}) {
		t.Fatalf("ratio %+v, want median 2 of 2, 1.8, 2.2", r)
	}
	if p := c.ratio("ours", "base", p99Ms); p.Value != 2.5 {
		t.Fatalf("p99 ratio %+v, want median 2.5 of 2.5, 4.5, 2", p)
	}
	if got := c.medians(); len(got) != 2 || got[0].What != "ours" || got[1].What != "base" {
		t.Fatalf("medians %+v, want ours then base", got)
	}

	one := newComparison()
	one.add(Measurement{What: "ours", OpsPerSec: 10}, Measurement{What: "base", OpsPerSec: 5})
	if m := one.median("ours"); m.RunsOpsPerSec != nil || m.Note != "" {
		t.Fatalf("a single run reports runs: %+v", m)
	}
	if r := one.ratio("ours", "base", opsPerSec); r.Value != 2 || r.Runs != nil {
		t.Fatalf("a single run's ratio %+v", r)
	}
	if median([]float64{4, 1, 3, 2}) != 2.5 || median(nil) != 0 {
		t.Fatal("median of an even count is the mean of the middle two; of none, zero")
	}
}
