package capacity

import (
	"math"
	"strings"
	"testing"
	"time"
)

// The model reproduces the measured figures of BENCHMARKS.md: those it was
// fitted to exactly, the others within Tolerance, but for the known misses,
// each with its reason.
func TestModelReproducesTheMeasuredFigures(t *testing.T) {
	m := Fit(Measured)
	var out strings.Builder
	if err := Print(&out, m); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, f := range Figures {
		off := f.Off(m)
		switch {
		case f.Fitted && math.Abs(off) > 0.005:
			t.Errorf("%s: fitted, yet the model is %+.1f%% off", f.Name, 100*off)
		case !f.Fitted && f.Miss == "" && math.Abs(off) > Tolerance:
			t.Errorf("%s: measured %.0f, the model says %.0f (%+.1f%%, tolerance ±%.0f%%)",
				f.Name, f.Measured, f.Predict(m), 100*off, 100*Tolerance)
		}
	}
}

// Fit goes through the points it is given.
func TestFitGoesThroughItsPoints(t *testing.T) {
	p := Points{
		OneCaller: 2000, GroupedRate: 30_000, GroupedRounds: 1000, WriteOne: 10_000, WriteMany: 40_000, Many: 8,
		Backlog: 10_000, DrainRate: 40_000, BigBacklog: 100_000, BigDrainRate: 20_000,
	}
	m := Fit(p)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got/want-1) > 1e-4 { // durations are whole nanoseconds
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	near("one caller", m.SubmitRate(1), 2000)
	near("rounds of 30", 1/m.Round(30).Seconds(), 1000)
	near("steps of 1", m.ApplyRate(1), 10_000)
	near("steps of 8", m.ApplyRate(8), 40_000)
	near("backlog", 10_000/m.DrainSeconds(10_000), 40_000)
	near("big backlog", 100_000/m.DrainSeconds(100_000), 20_000)
	if m.RoundBase <= 0 || m.PerSubmission <= 0 || m.StepBase <= 0 || m.PerWrite <= 0 || m.HistoryReadRate <= 0 {
		t.Errorf("model %+v", m)
	}
}

func TestGroupSizeAndKeepAlives(t *testing.T) {
	m := Fit(Measured)
	for c, want := range map[int]float64{1: 1, 2: 1, 16: 8, 64: 32, 128: 64, 1000: 64} {
		if got := m.GroupSize(c); got != want {
			t.Errorf("GroupSize(%d) = %v, want %v", c, got, want)
		}
	}
	// A 10 s lease is renewed every 3.33 s + 0.25 s on average.
	if got := m.KeepAlives(1000, 10*time.Second); math.Abs(got-279.07) > 0.01 {
		t.Errorf("1000 registrations of 10s: %.2f keep-alives/s", got)
	}
	// Through a node, every 3.33 s.
	if got := m.NodeKeepAlives(1000, 10*time.Second); math.Abs(got-300) > 0.01 {
		t.Errorf("1000 registrations of 10s through a node: %.2f keep-alives/s", got)
	}
	if got, want := Colocated(30, 60), 20.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("Colocated(30, 60) = %v", got)
	}
	if got := Separate(30, 60); got != 30 {
		t.Errorf("Separate(30, 60) = %v", got)
	}
}

// Moving the model to other hardware replaces the measured machine's fsync
// and round trips with the new ones and divides the CPU terms by the
// speed-up; the measured machine itself gives the model back.
func TestScale(t *testing.T) {
	m := Fit(Measured)
	if same := m.Scale(MeasuredHardware, MeasuredHardware); same != m {
		t.Errorf("scaled to itself: %+v, want %+v", same, m)
	}
	hw := Hardware{Fsync: 2 * time.Millisecond, ClientRTT: 500 * time.Microsecond, PeerRTT: time.Millisecond, CPUSpeed: 2}
	s := m.Scale(MeasuredHardware, hw)
	fixed := m.RoundBase - MeasuredHardware.Fsync - MeasuredHardware.ClientRTT
	if want := 3500*time.Microsecond + fixed/2; s.RoundBase != want {
		t.Errorf("RoundBase %s, want %s", s.RoundBase, want)
	}
	if want := (m.StepBase - MeasuredHardware.MemcachedRTT) / 2; s.StepBase != want {
		t.Errorf("StepBase %s, want %s", s.StepBase, want)
	}
	if s.PerSubmission != m.PerSubmission/2 || s.PerWrite != m.PerWrite/2 || s.DrainRate != 2*m.DrainRate {
		t.Errorf("scaled %+v", s)
	}
	c := s.Ceiling(10 * time.Second)
	if c.SubmitCallers != 128 || c.EndToEnd != math.Min(c.ManySubmitters, c.Apply) || c.Submit >= c.ManySubmitters {
		t.Errorf("ceiling %+v", c)
	}
}
