package applier

import (
	"slices"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// partition puts all writes of a name in one lane, in their order, spreads
// names over at most n lanes evening out their writes, and leaves a single
// name's or a single writer's writes as they are.
func TestPartition(t *testing.T) {
	var writes []plannedWrite
	// Names a..e with 8, 4, 3, 2 and 1 writes, interleaved.
	counts := map[string]int{"a": 8, "b": 4, "c": 3, "d": 2, "e": 1}
	for round := range 8 {
		for _, name := range []string{"a", "b", "c", "d", "e"} {
			if round < counts[name] {
				writes = append(writes, plannedWrite{item: len(writes), w: Write{Name: name, Index: round}, group: name})
			}
		}
	}

	if got := partition(nil, 4); got != nil {
		t.Errorf("partition(nil) = %v, want no lane", got)
	}
	for _, n := range []int{0, 1} {
		if got := partition(writes, n); len(got) != 1 || !sameItems(got[0], writes) {
			t.Errorf("partition(writes, %d) = %v, want the writes as one lane", n, got)
		}
	}
	one := []plannedWrite{{item: 0, w: Write{Name: "a"}, group: "a"}, {item: 1, w: Write{Name: "a", Index: 1}, group: "a"}}
	if got := partition(one, 8); len(got) != 1 || !sameItems(got[0], one) {
		t.Errorf("partition of one name = %v, want one lane", got)
	}

	for _, n := range []int{2, 3, 5, 8} {
		lanes := partition(writes, n)
		if want := min(n, len(counts)); len(lanes) != want {
			t.Errorf("n=%d: %d lanes, want %d", n, len(lanes), want)
		}
		laneOf := map[string]int{}
		total := 0
		for l, lane := range lanes {
			if len(lane) == 0 {
				t.Errorf("n=%d: lane %d is empty", n, l)
			}
			for k, pw := range lane {
				if prev, ok := laneOf[pw.w.Name]; ok && prev != l {
					t.Errorf("n=%d: name %s in lanes %d and %d", n, pw.w.Name, prev, l)
				}
				laneOf[pw.w.Name] = l
				if k > 0 && lane[k-1].item >= pw.item {
					t.Errorf("n=%d: lane %d holds item %d before item %d", n, l, lane[k-1].item, pw.item)
				}
			}
			total += len(lane)
		}
		if total != len(writes) {
			t.Errorf("n=%d: %d writes in lanes, want %d", n, total, len(writes))
		}
	}
	// Busiest name first, each on the lane with the fewest writes so far:
	// two lanes take a | b, c, then d and e even them out; three take
	// a | b, e | c, d.
	for n, want := range map[int][]int{2: {9, 9}, 3: {8, 5, 5}} {
		var got []int
		for _, lane := range partition(writes, n) {
			got = append(got, len(lane))
		}
		if !slices.Equal(got, want) {
			t.Errorf("n=%d: lanes hold %v writes, want %v", n, got, want)
		}
	}
}

// sameItems reports whether a and b hold the same writes in the same order.
func sameItems(a, b []plannedWrite) bool {
	return slices.EqualFunc(a, b, func(x, y plannedWrite) bool { return x.item == y.item && x.w.Name == y.w.Name })
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
