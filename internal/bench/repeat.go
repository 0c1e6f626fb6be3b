package bench

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxRepeat bounds Config.Repeat.
const maxRepeat = 20

// inTurn runs steps in order on even runs and in reverse order on odd ones,
// stopping at the first error. Alternating the order means that a drift
// over a scenario (etcd's history growing, another process's load coming
// or going) favours neither ours nor a baseline in the median.
func inTurn(run int, steps ...func() error) error {
	if run%2 == 1 {
		steps = slices.Clone(steps)
		slices.Reverse(steps)
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// comparison collects every run of the measurements one scenario compares
// at one concurrency, by name.
type comparison struct {
	runs  map[string][]Measurement
	order []string // names in the order first added
}

func newComparison() *comparison { return &comparison{runs: map[string][]Measurement{}} }

// add records one run of each measurement.
func (c *comparison) add(ms ...Measurement) {
	for _, m := range ms {
		if _, ok := c.runs[m.What]; !ok {
			c.order = append(c.order, m.What)
		}
		c.runs[m.What] = append(c.runs[m.What], m)
	}
}

// measured returns a step that runs measure and adds its measurement; the
// step fails when measure does or when the measurement did nothing but fail.
func (c *comparison) measured(measure func() (Measurement, error)) func() error {
	return func() error {
		m, err := measure()
		if err != nil {
			return err
		}
		c.add(m)
		return failed(m)
	}
}

// compare runs steps Config.Repeat times, in reverse order every other time
// (inTurn). When a step fails, sr gets the median of what c has so far.
func (r *runner) compare(sr *ScenarioReport, c *comparison, steps ...func() error) error {
	for run := range r.cfg.Repeat {
		if r.cfg.Repeat > 1 {
			r.Progressf("  run %d of %d", run+1, r.cfg.Repeat)
		}
		if err := inTurn(run, steps...); err != nil {
			sr.Measurements = append(sr.Measurements, c.medians()...)
			return err
		}
	}
	return nil
}

// medians returns the median run of every measurement added, in the order
// first added: what a scenario that fails part-way reports.
func (c *comparison) medians() []Measurement {
	ms := make([]Measurement, len(c.order))
	for i, what := range c.order {
		ms[i] = c.median(what)
	}
	return ms
}

// median returns the run of what whose throughput is the median (the lower
// of the middle two for an even count). With more than one run it carries
// every run's throughput, in the order they ran, says so in its note, and
// counts the errors of every run.
func (c *comparison) median(what string) Measurement {
	runs := c.runs[what]
	if len(runs) == 0 {
		return Measurement{What: what}
	}
	if len(runs) == 1 {
		return runs[0]
	}
	byRate := slices.Clone(runs)
	slices.SortStableFunc(byRate, func(a, b Measurement) int { return cmp.Compare(a.OpsPerSec, b.OpsPerSec) })
	m := byRate[(len(byRate)-1)/2]
	m.RunsOpsPerSec = make([]float64, len(runs))
	m.Errors = 0
	rates := make([]string, len(runs))
	for i, r := range runs {
		m.RunsOpsPerSec[i] = r.OpsPerSec
		rates[i] = strconv.FormatFloat(r.OpsPerSec, 'f', 0, 64)
		m.Errors += r.Errors
	}
	m.Note = joinNote(fmt.Sprintf("median of %d runs by ops/s: %s", len(runs), strings.Join(rates, ", ")), m.Note)
	return m
}

// ratio returns metric(ours) / metric(baseline) for each run, paired in the
// order they ran, and their median.
func (c *comparison) ratio(ours, baseline string, metric func(Measurement) float64) Ratio {
	o, b := c.runs[ours], c.runs[baseline]
	n := min(len(o), len(b))
	runs := make([]float64, n)
	for i := range n {
		runs[i] = ratio(metric(o[i]), metric(b[i]))
	}
	r := Ratio{Value: median(runs)}
	if n > 1 {
		r.Runs = runs
	}
	return r
}

func opsPerSec(m Measurement) float64 { return m.OpsPerSec }
func p99Ms(m Measurement) float64     { return m.P99Ms }

// cpuPerOp is a measurement's CPU time per operation, zero when not
// measured.
func cpuPerOp(m Measurement) float64 {
	if m.CPU == nil {
		return 0
	}
	return m.CPU.PerOpMicros
}

// median returns the median of xs (the mean of the middle two for an even
// count), zero for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}

// runLabel names run i in a note when the comparisons are repeated.
func (r *runner) runLabel(i int) string {
	if r.cfg.Repeat > 1 {
		return fmt.Sprintf(" (run %d)", i+1)
	}
	return ""
}
