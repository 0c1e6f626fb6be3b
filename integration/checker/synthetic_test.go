package checker

import (
	"strconv"
	"testing"
)

// synthetic builds a clean history of n operations on 6 keys applied one
// after the other, and reads readers' gets of the state at random moments.
// Its batches are stored in transactions of one to a few batches (group
// commit), so that most tokens share their revision with another.
func synthetic(n, reads, readers int) *History {
	h := &History{Keys: []string{"a", "b", "c", "d", "e", "f"}, Final: Final{Memcached: map[string]Item{}, Registrations: []RegEvent{{Name: "w", Rev: 1}}}}
	state := map[string]string{}
	type snap struct {
		at    int64
		key   string
		value string
	}
	var changes []snap
	seed := uint64(1)
	rnd := func(m int) int { seed = seed*6364136223846793005 + 1442695040888963407; return int(seed>>33) % m }
	tok := Rev(1)
	for i := range n {
		if i == 0 || rnd(3) == 0 {
			tok = Rev(tok.Revision + 1)
		} else {
			tok.Index++
		}
		key := h.Keys[rnd(len(h.Keys))]
		id := "c" + itoa(i)
		op := set(key, id)
		if rnd(4) == 0 {
			op = del(key)
		}
		at := int64(i+1) * 1000
		h.Calls = append(h.Calls, groupCall(id, "w", 1, at-500, at-100, OK, tok, op))
		if op.Kind == KindSet {
			state[key] = id
		} else {
			delete(state, key)
		}
		changes = append(changes, snap{at, key, state[key]})
	}
	accept(h, nil)
	h.Final.Watermark = tok
	for k, v := range state {
		h.Final.Memcached[k] = Item{Found: true, Value: v}
	}
	cur := map[string]string{}
	ci := 0
	step := int64(n) * 1000 / int64(reads)
	for j := range reads {
		at := int64(j) * step
		for ci < len(changes) && changes[ci].at < at {
			cur[changes[ci].key] = changes[ci].value
			ci++
		}
		key := h.Keys[rnd(len(h.Keys))]
		h.Reads = append(h.Reads, Read{Reader: "r" + itoa(rnd(readers)), Key: key, Start: at, End: at + 1, Found: cur[key] != "", Value: cur[key]})
	}
	return h
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestSyntheticHistoryIsClean(t *testing.T) {
	rep := Check(synthetic(2000, 20000, 50))
	if !rep.OK() {
		t.Fatalf("synthetic clean history reported:\n%s", rep.Describe(5))
	}
	if rep.Stats.Indexed == 0 || rep.Stats.SharedTxns == 0 {
		t.Fatalf("synthetic history has no shared transaction: %+v", rep.Stats)
	}
}

// BenchmarkCheckLong is about the size of a 20-minute randomized run.
func BenchmarkCheckLong(b *testing.B) {
	h := synthetic(36000, 700000, 5000)
	b.ResetTimer()
	for range b.N {
		Check(h)
	}
}
