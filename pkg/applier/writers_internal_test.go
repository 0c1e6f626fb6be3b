package applier

import (
	"slices"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// schedule puts at most one write of a group, and at most n writes, in a
// step, keeps each group's writes in their order, takes the groups whose
// next write comes first (so n = 1 keeps the writes' order), and needs no
// more steps than the busiest group has writes when n is at least the
// number of groups.
func TestSchedule(t *testing.T) {
	var writes []plannedWrite
	// Groups a..e with 8, 4, 3, 2 and 1 writes, interleaved.
	counts := map[string]int{"a": 8, "b": 4, "c": 3, "d": 2, "e": 1}
	for round := range 8 {
		for _, name := range []string{"a", "b", "c", "d", "e"} {
			if round < counts[name] {
				writes = append(writes, plannedWrite{item: len(writes), w: Write{Name: name, Index: round}, group: name})
			}
		}
	}
	if got := schedule(nil, 4); got != nil {
		t.Errorf("schedule(nil) = %v, want no step", got)
	}
	for n, want := range map[int][]string{
		// One write at a time: the writes in their order.
		1: {"a", "b", "c", "d", "e", "a", "b", "c", "d", "a", "b", "c", "a", "b", "a", "a", "a", "a"},
		2: {"ab", "cd", "ae", "bc", "ad", "bc", "ab", "a", "a", "a", "a"},
		3: {"abc", "ade", "bcd", "abc", "ab", "a", "a", "a", "a"},
		5: {"abcde", "abcd", "abc", "ab", "a", "a", "a", "a"},
		8: {"abcde", "abcd", "abc", "ab", "a", "a", "a", "a"},
	} {
		steps := schedule(writes, n)
		var got []string
		next := map[string]int{} // the index each group's next write must have
		total := 0
		for s, step := range steps {
			names := ""
			for _, pw := range step {
				names += pw.w.Name
				if pw.w.Index != next[pw.group] {
					t.Errorf("n=%d, step %d: write %d of %s, want %d", n, s, pw.w.Index, pw.group, next[pw.group])
				}
				next[pw.group]++
			}
			if len(step) == 0 || len(step) > max(n, 1) {
				t.Errorf("n=%d, step %d holds %d writes", n, s, len(step))
			}
			got = append(got, sortedNames(names))
			total += len(step)
		}
		if total != len(writes) {
			t.Errorf("n=%d: %d writes in steps, want %d", n, total, len(writes))
		}
		if !slices.Equal(got, want) {
			t.Errorf("n=%d: steps %v, want %v", n, got, want)
		}
	}
}

// sortedNames returns the one-letter names of s in order.
func sortedNames(s string) string {
	b := []byte(s)
	slices.Sort(b)
	return string(b)
}

// laneGroups joins names whose operations share a key, written or skipped,
// and leaves the others apart.
func TestLaneGroups(t *testing.T) {
	batch := func(name string, keys ...string) pending {
		b := &ops.Batch{Name: name}
		for _, k := range keys {
			b.Ops = append(b.Ops, ops.Delete(k))
		}
		return pending{batch: b}
	}
	g := laneGroups([]pending{
		batch("x", "k2"), batch("y", "k2"), batch("x", "k4"),
		batch("z", "k9"), batch("u", "k7"), batch("v", "k8", "k7"), batch("w", "k8"),
		{bad: "not a record"},
	})
	if g["x"] != g["y"] {
		t.Errorf("x and y share k2 but are in groups %q and %q", g["x"], g["y"])
	}
	if g["u"] != g["v"] || g["v"] != g["w"] {
		t.Errorf("u, v, w are chained by k7 and k8 but are in groups %q %q %q", g["u"], g["v"], g["w"])
	}
	if g["z"] == g["x"] || g["z"] == g["u"] || g["x"] == g["u"] {
		t.Errorf("unrelated names joined: %v", g)
	}
}
