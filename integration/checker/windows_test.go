package checker

import (
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/applier"
)

// windowHistory has a set, a delete by a newer leader, the stale set
// recreated by the former leader, and a later set that replaces it.
func windowHistory(terms []int64) *History {
	h := &History{
		Keys: []string{"a"},
		Calls: []Call{
			call("c1", "w", 10, 100, 110, OK, 12, set("a", "w.1")),
			call("c2", "w", 10, 120, 130, OK, 16, del("a")),
			call("c3", "w", 10, 160, 170, OK, 20, set("a", "w.3")),
		},
		Reads: []Read{
			read("r1", "a", 111, "w.1"),
			read("r1", "a", 140, ""),
			read("r1", "a", 150, "w.1"),
			read("r1", "a", 180, "w.3"),
			read("r2", "a", 151, "w.1"),
		},
		Final: Final{
			Memcached:     map[string]Item{"a": {Found: true, Value: "w.3"}},
			Watermark:     Rev(20),
			Registrations: []RegEvent{{Name: "w", Rev: 10}},
			Terms:         terms,
		},
	}
	accept(h, nil)
	return h
}

func TestDeleteWindowIsReportedApart(t *testing.T) {
	rep := Check(windowHistory([]int64{5, 15}))
	if !rep.OK() {
		t.Fatalf("delete window reported as violation:\n%s", rep.Describe(0))
	}
	if len(rep.DeleteWindows) == 0 {
		t.Fatalf("delete window not reported:\n%s", rep.Describe(0))
	}
	// Without a leadership change in between, no former leader can have
	// written it: the same reads are a violation.
	rep = Check(windowHistory([]int64{5}))
	if rep.Count(RuleBack) == 0 {
		t.Fatalf("stale value without a term change not flagged:\n%s", rep.Describe(0))
	}
	// Without a reader having found the key absent first, nothing shows the
	// delete came before the stale value: a later delete does not excuse an
	// older value read after WaitApplied passed a newer set.
	h := windowHistory([]int64{5, 15})
	h.Calls[1] = call("c2", "w", 10, 120, 130, OK, 16, set("a", "w.2"))
	h.Calls = append(h.Calls, call("c4", "w", 10, 135, 138, OK, 18, del("a")))
	h.Final.Watermark = Rev(20)
	accept(h, nil)
	h.Applied = []Applied{{Token: Rev(16), Start: 130, End: 145}}
	h.Reads = []Read{read("r1", "a", 111, "w.1"), read("r1", "a", 146, "w.1"), read("r1", "a", 180, "w.3")}
	rep = Check(h)
	if rep.Count(RuleApplied) == 0 || len(rep.DeleteWindows) != 0 {
		t.Fatalf("older value after WaitApplied taken for a delete window:\n%s", rep.Describe(0))
	}
}

func TestMemcachedRestartExplainsMisses(t *testing.T) {
	h := small()
	h.Reads = []Read{read("r1", "a", 135, "w.2"), read("r1", "a", 200, "")}
	h.Wipes = []Wipe{{Down: 180, Up: 190}}
	h.Final.Memcached = map[string]Item{"b": {Found: true, Value: "w.3"}}
	rep := Check(h)
	if !rep.OK() {
		t.Fatalf("misses after a memcached restart reported:\n%s", rep.Describe(0))
	}
	if len(rep.Notes) == 0 {
		t.Fatalf("value lost to the restart not noted")
	}
	// Without the restart the same history loses a value.
	h.Wipes = nil
	if rep := Check(h); rep.Count(RuleBack) == 0 || rep.Count(RuleFinal) == 0 {
		t.Fatalf("lost value not flagged:\n%s", rep.Describe(0))
	}
}

// A restart of one server of a pool loses that server's keys only: it
// explains a miss of its keys, not of a key on another server.
func TestPoolServerRestartLosesOnlyItsKeys(t *testing.T) {
	h := small()
	h.Reads = []Read{read("r1", "a", 135, "w.2"), read("r1", "a", 200, "")}
	h.Wipes = []Wipe{{Down: 180, Up: 190, Keys: []string{"a"}}}
	h.Final.Memcached = map[string]Item{"b": {Found: true, Value: "w.3"}}
	rep := Check(h)
	if !rep.OK() {
		t.Fatalf("misses after the restart of the key's server reported:\n%s", rep.Describe(0))
	}
	if len(rep.Notes) == 0 {
		t.Fatalf("value lost to the restart not noted")
	}
	// The restart of another server explains nothing about a.
	h.Wipes = []Wipe{{Down: 180, Up: 190, Keys: []string{"b"}}}
	if rep := Check(h); rep.Count(RuleBack) == 0 || rep.Count(RuleFinal) == 0 {
		t.Fatalf("value lost on a server that did not restart not flagged:\n%s", rep.Describe(0))
	}
}

// A miss after a memcached restart says nothing about which delete was
// applied: an older pending set may still land after it.
func TestMissAfterRestartIsNotADelete(t *testing.T) {
	h := small()
	h.Calls = append(h.Calls, call("c4", "w", 10, 160, 170, OK, 18, del("a")))
	h.Final.Accepted = append(h.Final.Accepted, Accepted{ID: "c4", Name: "w", Incarnation: 10, Token: Rev(18), Ops: []Op{del("a")}})
	h.Final.Watermark = Rev(18)
	h.Final.Memcached = map[string]Item{"b": {Found: true, Value: "w.3"}}
	// Reader saw w.1, memcached restarted (a miss), then the pending w.2
	// was applied, then the delete.
	h.Reads = []Read{read("r1", "a", 111, "w.1"), read("r1", "a", 180, ""), read("r1", "a", 200, "w.2"), read("r1", "a", 220, "")}
	h.Wipes = []Wipe{{Down: 150, Up: 175}}
	if rep := Check(h); !rep.OK() {
		t.Fatalf("pending set applied after a restart reported:\n%s", rep.Describe(0))
	}
}

func TestUnknownOutcomesWithoutEtcdHistory(t *testing.T) {
	h := clean()
	h.Final.EtcdHistory = false
	h.Final.Accepted = nil
	h.Final.Registrations = nil
	h.Final.Terms = nil
	rep := Check(h)
	if !rep.OK() {
		t.Fatalf("unknown submissions without etcd history reported:\n%s", rep.Describe(0))
	}
	// A refused value is still a violation.
	h.Reads = append(h.Reads, read("r2", "a", 320, "w.1.3"))
	if rep := Check(h); rep.Count(RuleRefusedApplied) == 0 {
		t.Fatalf("refused value not flagged:\n%s", rep.Describe(0))
	}
}

func TestTopTwoKeepsNewestOfOtherReaders(t *testing.T) {
	var tt topTwo
	st := func(tok int64) readerState { return readerState{set: true, pos: pos{tok: Rev(tok)}} }
	tt.add("a", st(5))
	tt.add("b", st(3))
	tt.add("a", st(7))
	tt.add("c", st(4)) // c replaces b as second
	if got, who := tt.except("a"); got.pos.tok != Rev(4) || who != "c" {
		t.Fatalf("except a: %v %s", got.pos, who)
	}
	tt.add("c", st(9)) // c overtakes a
	if got, who := tt.except("c"); got.pos.tok != Rev(7) || who != "a" {
		t.Fatalf("except c: %v %s", got.pos, who)
	}
	if got, who := tt.except("z"); got.pos.tok != Rev(9) || who != "c" {
		t.Fatalf("except z: %v %s", got.pos, who)
	}
}

// windowsOn is windowHistory's sequence on each of keys: a set, a delete by
// a newer leader, the stale set read again after a reader found the key
// absent, and a later set. Each key is one recreation.
func windowsOn(keys []string, terms []int64) *History {
	h := &History{Keys: keys, Final: Final{
		Memcached: map[string]Item{}, Registrations: []RegEvent{{Name: "w", Rev: 10}}, Terms: terms,
	}}
	for i, k := range keys {
		rev := int64(100 * (i + 1))
		h.Calls = append(h.Calls,
			call(k+"1", "w", 10, rev, rev+1, OK, rev+2, set(k, "w."+k+".1")),
			call(k+"2", "w", 10, rev+3, rev+4, OK, rev+6, del(k)),
			call(k+"3", "w", 10, rev+40, rev+41, OK, rev+50, set(k, "w."+k+".3")))
		h.Reads = append(h.Reads,
			read("r1", k, rev+3, "w."+k+".1"),
			read("r1", k, rev+10, ""),
			read("r1", k, rev+20, "w."+k+".1"),
			read("r1", k, rev+60, "w."+k+".3"))
		h.Final.Memcached[k] = Item{Found: true, Value: "w." + k + ".3"}
		h.Final.Watermark = Rev(rev + 50)
	}
	accept(h, nil)
	return h
}

// The stale values the delete windows excuse are counted, each once however
// often it is read, and bounded by one step's writes per leadership that
// ended: more than that is a violation, so that a change in how often they
// happen is seen.
func TestDeleteWindowsAreCountedAndBounded(t *testing.T) {
	keys := []string{"a", "b", "c"}
	terms := []int64{5, 303} // one leadership ended, after every stale set was accepted
	h := windowsOn(keys, terms)
	h.Reads = append(h.Reads, read("r1", "a", 121, "w.a.1")) // the same stale value again
	rep := Check(h)
	if !rep.OK() || rep.Stats.Recreations != 3 || rep.Stats.RecreationBound != DefaultStepWrites {
		t.Fatalf("three recreations within the bound: stats %+v\n%s", rep.Stats, rep.Describe(0))
	}
	h.StepWrites = 2
	rep = Check(h)
	if rep.Count(RuleWindows) != 1 || rep.Stats.RecreationBound != 2 {
		t.Fatalf("three recreations after one leadership of steps of 2 not flagged: stats %+v\n%s", rep.Stats, rep.Describe(0))
	}
	h.Final.Terms = []int64{5, 303, 304}
	if rep := Check(h); !rep.OK() || rep.Stats.RecreationBound != 4 {
		t.Fatalf("three recreations after two leaderships of steps of 2: stats %+v\n%s", rep.Stats, rep.Describe(0))
	}
	if rep := Check(windowsOn(keys, []int64{5})); rep.Stats.Recreations != 0 || rep.Count(RuleBack) == 0 {
		t.Fatalf("stale values without a leadership change excused: stats %+v\n%s", rep.Stats, rep.Describe(0))
	}
}

// The bound's default is the nodes' default step.
func TestDefaultStepWritesIsTheNodesDefault(t *testing.T) {
	if DefaultStepWrites != applier.DefaultWriteConcurrency {
		t.Fatalf("DefaultStepWrites %d, applier.DefaultWriteConcurrency %d", DefaultStepWrites, applier.DefaultWriteConcurrency)
	}
}
