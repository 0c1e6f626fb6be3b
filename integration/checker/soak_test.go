package checker

import (
	"strings"
	"testing"
)

// soakHistory is a clean history with one series of samples, a minute
// apart.
func soakHistory(process, metric string, values ...float64) *History {
	h := &History{Scenario: "soak", Final: Final{Memcached: map[string]Item{}}}
	for i, v := range values {
		h.Soak = append(h.Soak, Sample{At: int64(i) * 60e9, Process: process, Metric: metric, Value: v})
	}
	return h
}

func TestLeakRuleFlagsUnboundedGrowth(t *testing.T) {
	mib := float64(1 << 20)
	var rss []float64
	for i := range 30 {
		rss = append(rss, 40*mib+float64(i)*4*mib) // +4 MiB a minute, 40 to 156 MiB
	}
	for _, tc := range []struct {
		name   string
		h      *History
		leak   bool
		detail string
	}{
		{"rss growing steadily", soakHistory("node0", MetricRSS, rss...), true, "node0 rss"},
		{"goroutines growing", soakHistory("node1", MetricGoroutines, 30, 31, 35, 60, 90, 120, 150, 180, 210, 240, 270, 300), true, "node1 goroutines"},
		{"fds growing", soakHistory("etcd-m0", MetricFDs, 40, 42, 44, 60, 70, 80, 90, 100, 110), true, "etcd-m0 fds"},
		{"rss warming up then flat", soakHistory("node0", MetricRSS,
			20*mib, 60*mib, 80*mib, 90*mib, 90*mib, 91*mib, 90*mib, 92*mib, 91*mib, 90*mib, 91*mib, 91*mib), false, ""},
		{"goroutines up and down", soakHistory("node2", MetricGoroutines, 40, 300, 45, 310, 42, 305, 44, 300, 41), false, ""},
		{"grown but falling again", soakHistory("node0", MetricFDs, 20, 20, 20, 80, 90, 100, 100, 90, 60), false, ""},
		{"small growth within the minimum", soakHistory("node0", MetricGoroutines, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29), false, ""},
		{"too few samples", soakHistory("node0", MetricFDs, 10, 100, 1000, 10000), false, ""},
		// An uncompacted etcd member's RSS grows with its history by design;
		// what each revision costs is what must not grow.
		{"member rss growing with its history", soakHistory("etcd-m0", MetricMemberRSS, rss...), false, ""},
		{"member rss per revision falling", soakHistory("etcd-m0", MetricRSSBytesPerRev, 4000, 2000, 1200, 900, 700, 600, 500, 450, 420, 400), false, ""},
		{"member rss per revision growing", soakHistory("etcd-m0", MetricRSSBytesPerRev, 300, 310, 320, 600, 800, 1000, 1200, 1400, 1600), true, "etcd-m0 rss-bytes-per-rev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(tc.h)
			if got := rep.Count(RuleLeak); (got > 0) != tc.leak {
				t.Fatalf("%d leak violations, want leak=%v:\n%s", got, tc.leak, rep.Describe(0))
			}
			if tc.leak && !strings.Contains(rep.Violations[0].Msg, tc.detail) {
				t.Fatalf("violation %q does not name %q", rep.Violations[0].Msg, tc.detail)
			}
		})
	}
}

func TestSoakCurves(t *testing.T) {
	h := soakHistory("node0", MetricRSS, 10<<20, 30<<20, 20<<20)
	h.Soak = append(h.Soak, soakHistory("node0", MetricGoroutines, 12, 40, 15).Soak...)
	got := SoakCurves(h.Soak)
	want := []string{
		"node0 goroutines start=12 peak=40 end=15 samples=3",
		"node0 rss start=10.0MiB peak=30.0MiB end=20.0MiB samples=3",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("curves:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
