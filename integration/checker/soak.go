package checker

import (
	"fmt"
	"sort"
)

// RuleLeak: a process's resource (memory, goroutines, open files, etcd's
// bytes per revision) kept growing over a soak run: the median of the
// last third of its samples is above the first third's by more than the
// metric's threshold (LeakThresholds), and the last third is still rising.
const RuleLeak = "leak"

// Soak metrics.
const (
	// MetricRSS is a process's resident set size in bytes (/proc/PID/status
	// VmRSS).
	MetricRSS = "rss"
	// MetricGoroutines is a node's go_goroutines from its /metrics.
	MetricGoroutines = "goroutines"
	// MetricThreads is a process's OS threads (/proc/PID/status Threads),
	// recorded where goroutines cannot be read.
	MetricThreads = "threads"
	// MetricFDs is a process's open file descriptors (/proc/PID/fd).
	MetricFDs = "fds"
	// MetricDBBytesPerRev is an etcd member's database size divided by its
	// revision. The suite's members never compact (the checker reads the
	// whole key history), so the database grows with the revisions; what
	// each revision costs must not.
	MetricDBBytesPerRev = "db-bytes-per-rev"
	// MetricMemberRSS is an etcd member's resident set size. A member that
	// never compacts keeps an index entry for every revision in memory, so
	// its RSS grows with the history by design: it is reported, not judged;
	// MetricRSSBytesPerRev is judged in its place.
	MetricMemberRSS = "rss-uncompacted"
	// MetricRSSBytesPerRev is an etcd member's resident set size divided by
	// its revision: what each revision of the uncompacted history costs in
	// memory, which must not grow.
	MetricRSSBytesPerRev = "rss-bytes-per-rev"
)

// Sample is one reading of one metric of one process during a soak run.
type Sample struct {
	At      int64   `json:"at"`
	Process string  `json:"process"`
	Metric  string  `json:"metric"`
	Value   float64 `json:"value"`
}

// LeakThreshold is how much a metric may grow before RuleLeak flags it:
// the last third's median may exceed the first third's by Ratio of it or
// by Min, whichever is larger.
type LeakThreshold struct {
	Ratio float64
	Min   float64
}

// LeakThresholds are the thresholds RuleLeak applies, by metric. A run's
// first third includes the warm-up (caches, connection pools, the Go heap
// finding its goal), so a bounded process stays well within half again
// its early size.
var LeakThresholds = map[string]LeakThreshold{
	MetricRSS:            {Ratio: 0.5, Min: 32 << 20},
	MetricGoroutines:     {Ratio: 0.5, Min: 50},
	MetricThreads:        {Ratio: 0.5, Min: 10},
	MetricFDs:            {Ratio: 0.5, Min: 20},
	MetricDBBytesPerRev:  {Ratio: 0.5, Min: 256},
	MetricRSSBytesPerRev: {Ratio: 0.5, Min: 256},
}

// minLeakSamples is the fewest samples of a series RuleLeak judges: three
// per third.
const minLeakSamples = 9

// series groups samples by process and metric, each in time order.
func series(samples []Sample) (map[[2]string][]Sample, [][2]string) {
	by := map[[2]string][]Sample{}
	var order [][2]string
	for _, s := range samples {
		k := [2]string{s.Process, s.Metric}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], s)
	}
	for _, ss := range by {
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].At < ss[j].At })
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i][0] != order[j][0] {
			return order[i][0] < order[j][0]
		}
		return order[i][1] < order[j][1]
	})
	return by, order
}

func median(ss []Sample) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = s.Value
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// checkLeaks applies RuleLeak to every series of the history's soak
// samples.
func (c *checker) checkLeaks() {
	by, order := series(c.h.Soak)
	for _, k := range order {
		ss := by[k]
		th, ok := LeakThresholds[k[1]]
		if !ok || len(ss) < minLeakSamples {
			continue
		}
		third := len(ss) / 3
		first, last := median(ss[:third]), median(ss[len(ss)-third:])
		if last-first <= max(first*th.Ratio, th.Min) {
			continue
		}
		// Still rising: the last third ends above where it starts and
		// its second half is above its first half.
		tail := ss[len(ss)-third:]
		h := len(tail) / 2
		if !(tail[len(tail)-1].Value > tail[0].Value && median(tail[len(tail)-h:]) > median(tail[:h])) {
			continue
		}
		c.violate(RuleLeak, "", k[0]+"|"+k[1], "%s %s grew from a median of %.0f (first third) to %.0f (last third) and still rises (threshold +%.0f%% or +%.0f)",
			k[0], k[1], first, last, th.Ratio*100, th.Min)
	}
}

// SoakCurves summarises the soak samples: for every process and metric,
// its first, highest and last value.
func SoakCurves(samples []Sample) []string {
	by, order := series(samples)
	var out []string
	for _, k := range order {
		ss := by[k]
		peak := ss[0].Value
		for _, s := range ss {
			peak = max(peak, s.Value)
		}
		out = append(out, fmt.Sprintf("%s %s start=%s peak=%s end=%s samples=%d",
			k[0], k[1], formatMetric(k[1], ss[0].Value), formatMetric(k[1], peak), formatMetric(k[1], ss[len(ss)-1].Value), len(ss)))
	}
	return out
}

func formatMetric(metric string, v float64) string {
	if metric == MetricRSS || metric == MetricMemberRSS {
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
	return fmt.Sprintf("%.0f", v)
}
