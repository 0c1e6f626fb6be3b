package checker

import (
	"strings"
	"testing"
)

func TestSummaryCountsOverlapAndKinds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults []Fault
		want   string
	}{
		{"none", nil, "overlap=0 kinds=-"},
		{"one after the other", []Fault{
			{At: 10, Healed: 20, Kind: "kill -9"},
			{At: 30, Healed: 40, Kind: "blackhole"},
		}, "overlap=1 kinds=blackhole,kill-9"},
		{"a partition during a member kill", []Fault{
			{At: 10, Healed: 50, Kind: "partition"},
			{At: 20, Healed: 30, Kind: "kill -9"},
			{At: 25, Kind: "restart"}, // a moment only, inside both
			{At: 60, Healed: 70, Kind: "partition"},
		}, "overlap=3 kinds=kill-9,partition,restart"},
		{"healed as the next begins", []Fault{
			{At: 10, Healed: 20, Kind: "slow"},
			{At: 20, Healed: 30, Kind: "slow"},
		}, "overlap=2 kinds=slow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(&History{Scenario: "s", Faults: tc.faults, Final: Final{Memcached: map[string]Item{}}})
			if !strings.HasSuffix(rep.Summary(), tc.want) {
				t.Fatalf("summary %q does not end with %q", rep.Summary(), tc.want)
			}
		})
	}
}
