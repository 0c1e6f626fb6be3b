package checker

import (
	"encoding/json"
	"strings"
	"testing"
)

func set(key, value string) Op { return Op{Kind: KindSet, Key: key, Value: value} }
func del(key string) Op        { return Op{Kind: KindDelete, Key: key} }

// call is a submission; tok is the revision of a batch stored alone (index
// zero). groupCall gives a full token.
func call(id, name string, inc int64, start, end int64, res Result, tok int64, ops ...Op) Call {
	if res != OK {
		return groupCall(id, name, inc, start, end, res, Token{}, ops...)
	}
	return groupCall(id, name, inc, start, end, res, Rev(tok), ops...)
}

// tk is the token REV.IDX.
func tk(rev int64, idx uint32) Token { return Token{Revision: rev, Index: idx} }

// toks are tokens of batches stored alone.
func toks(revs ...int64) []Token {
	out := make([]Token, len(revs))
	for i, r := range revs {
		out[i] = Rev(r)
	}
	return out
}

func groupCall(id, name string, inc int64, start, end int64, res Result, tok Token, ops ...Op) Call {
	c := Call{ID: id, Name: name, Incarnation: inc, Ops: ops, Start: start, End: end, Result: res, Token: tok}
	if res == Refused {
		c.Err = "superseded"
	}
	if res == Unknown {
		c.Err = "context deadline exceeded"
	}
	return c
}

func read(reader, key string, start int64, value string) Read {
	return Read{Reader: reader, Key: key, Start: start, End: start + 1, Found: value != "", Value: value}
}

// accept fills Final.Accepted from the calls, with the tokens given for
// calls whose result was unknown.
func accept(h *History, unknown map[string]Token) {
	h.Final.EtcdHistory = true
	h.Final.Accepted = nil
	for _, c := range h.Calls {
		tok := c.Token
		if c.Result == Unknown {
			t, ok := unknown[c.ID]
			if !ok {
				continue
			}
			tok = t
		}
		if c.Result == Refused {
			continue
		}
		h.Final.Accepted = append(h.Final.Accepted, Accepted{ID: c.ID, Name: c.Name, Incarnation: c.Incarnation, Token: tok, Ops: c.Ops})
	}
}

// clean is a history with two names, a restart, a refused and two unknown
// submissions (one accepted), deletes, a WaitApplied, a drained
// registration, two readers, and no violation.
func clean() *History {
	h := &History{
		Scenario: "clean",
		Keys:     []string{"a", "b"},
		Calls: []Call{
			call("c1", "w", 10, 100, 110, OK, 12, set("a", "w.1.1")),
			call("c2", "v", 11, 120, 130, OK, 13, set("b", "v.1.1")),
			call("c3", "w", 10, 140, 150, OK, 14, set("a", "w.1.2")),
			call("c4", "w", 10, 160, 170, OK, 15, del("b")),
			call("c5", "w", 10, 200, 210, Refused, 0, set("a", "w.1.3")),
			call("c6", "w", 30, 220, 230, OK, 31, set("b", "w.2.1")),
			call("c7", "w", 30, 240, 250, Unknown, 0, set("a", "w.2.2")),
			call("c8", "v", 11, 260, 270, Unknown, 0, set("b", "v.1.2")),
		},
		Reads: []Read{
			read("r1", "a", 50, ""),
			read("r1", "a", 115, "w.1.1"),
			read("r1", "b", 135, "v.1.1"),
			read("r1", "a", 156, "w.1.2"),
			read("r1", "b", 175, ""),
			read("r1", "b", 235, "w.2.1"),
			read("r1", "a", 255, "w.2.2"),
			read("r2", "a", 145, "w.1.1"),
			read("r2", "b", 147, "v.1.1"),
			read("r2", "b", 195, ""),
			read("r2", "a", 200, "w.1.2"),
			read("r2", "a", 300, "w.2.2"),
			read("r2", "b", 302, "w.2.1"),
		},
		Applied:       []Applied{{Token: Rev(14), Start: 150, End: 155}},
		Drains:        []Drain{{Name: "w", Incarnation: 30, Start: 180, End: 190}},
		Registrations: []Registration{{Name: "w", Incarnation: 10}, {Name: "v", Incarnation: 11}, {Name: "w", Incarnation: 30, Start: 180, End: 190, WaitDrained: true}},
		Final: Final{
			Memcached:     map[string]Item{"a": {Found: true, Value: "w.2.2"}, "b": {Found: true, Value: "w.2.1"}},
			Watermark:     Rev(32),
			Registrations: []RegEvent{{Name: "w", Rev: 10}, {Name: "v", Rev: 11}, {Name: "w", Rev: 30}},
			Terms:         []int64{5, 20},
			Watermarks:    toks(13, 15, 32),
		},
	}
	accept(h, map[string]Token{"c7": Rev(32)})
	return h
}

// copyOf deep-copies a history through JSON, which also proves it survives
// being saved.
func copyOf(t *testing.T, h *History) *History {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var out History
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestCleanHistoryHasNoViolation(t *testing.T) {
	rep := Check(clean())
	if !rep.OK() || len(rep.DeleteWindows) != 0 {
		t.Fatalf("clean history reported:\n%s", rep.Describe(0))
	}
	s := rep.Stats
	if s.Calls != 8 || s.OK != 5 || s.Refused != 1 || s.Unknown != 2 || s.UnknownAccepted != 1 || s.Reads != 13 || s.Incarnations != 3 {
		t.Fatalf("stats %+v", s)
	}
	if !strings.Contains(rep.Summary(), "violations=0") {
		t.Fatalf("summary %q", rep.Summary())
	}
}

// small is a history with one name writing a then b, used by plants that
// need nothing else around them.
func small() *History {
	h := &History{
		Keys: []string{"a", "b"},
		Calls: []Call{
			call("c1", "w", 10, 100, 110, OK, 12, set("a", "w.1")),
			call("c2", "w", 10, 120, 130, OK, 14, set("a", "w.2")),
			call("c3", "w", 10, 140, 150, OK, 16, set("b", "w.3")),
		},
		Final: Final{
			Memcached:     map[string]Item{"a": {Found: true, Value: "w.2"}, "b": {Found: true, Value: "w.3"}},
			Watermark:     Rev(16),
			Registrations: []RegEvent{{Name: "w", Rev: 10}},
			Terms:         []int64{5},
		},
	}
	accept(h, nil)
	return h
}

func TestPlantedViolationsAreFlagged(t *testing.T) {
	cases := []struct {
		name  string
		rule  string
		plant func(h *History) *History
	}{
		{"refused value read", RuleRefusedApplied, func(h *History) *History {
			h.Reads = append(h.Reads, read("r1", "a", 260, "w.1.3"))
			return h
		}},
		{"refused value in final state", RuleRefusedApplied, func(h *History) *History {
			h.Final.Memcached["b"] = Item{Found: true, Value: "v.1.2"}
			return h
		}},
		{"refused batch in etcd", RuleRefusedApplied, func(h *History) *History {
			h.Final.Accepted = append(h.Final.Accepted, Accepted{ID: "c5", Name: "w", Incarnation: 10, Token: Rev(33), Ops: h.Calls[4].Ops})
			return h
		}},
		{"value no one wrote", RulePhantom, func(h *History) *History {
			h.Reads = append(h.Reads, read("r2", "a", 310, "nope"))
			return h
		}},
		{"value seen before it was submitted", RulePhantom, func(h *History) *History {
			h.Reads = append(h.Reads, read("r3", "a", 90, "w.1.1"))
			return h
		}},
		{"accepted after the registration ended", RuleFence, func(h *History) *History {
			h.Final.Registrations = append(h.Final.Registrations, RegEvent{Name: "w", Rev: 13, Deleted: true})
			return h
		}},
		{"accepted under a superseded incarnation", RuleFence, func(h *History) *History {
			h.Final.Accepted[0].Token = Rev(35) // w/10 after w/30 registered
			h.Calls[0].Token = Rev(35)
			return h
		}},
		{"acknowledged above the watermark", RuleLost, func(h *History) *History {
			h.Final.Watermark = Rev(31)
			return h
		}},
		{"acknowledged but not in etcd", RuleLost, func(h *History) *History {
			h.Final.Accepted = h.Final.Accepted[1:]
			return h
		}},
		{"batches left pending", RuleLost, func(h *History) *History {
			h.Final.Pending = 2
			return h
		}},
		{"final state is not the replay", RuleFinal, func(h *History) *History {
			h.Final.Memcached["a"] = Item{Found: true, Value: "w.1.2"}
			return h
		}},
		{"deleted key back in the final state", RuleFinal, func(h *History) *History {
			h.Calls = append(h.Calls, call("c9", "w", 30, 400, 410, OK, 40, del("a")))
			h.Final.Accepted = append(h.Final.Accepted, Accepted{ID: "c9", Name: "w", Incarnation: 30, Token: Rev(40), Ops: []Op{del("a")}})
			h.Final.Watermark = Rev(40)
			return h
		}},
		{"old incarnation never applied", RuleOldFirst, func(h *History) *History {
			h.Final.Watermark = Rev(14)
			return h
		}},
		{"order across keys", RuleOrder, func(_ *History) *History {
			h := small()
			h.Reads = []Read{read("r1", "b", 160, "w.3"), read("r1", "a", 162, "w.1")}
			return h
		}},
		{"stale across readers", RuleStale, func(h *History) *History {
			h.Reads = append(h.Reads, read("r3", "a", 270, "w.1.2"))
			return h
		}},
		{"absent across readers", RuleStale, func(_ *History) *History {
			h := small()
			h.Reads = []Read{read("r1", "a", 112, "w.1"), read("r2", "a", 115, "")}
			return h
		}},
		{"reader goes back", RuleBack, func(h *History) *History {
			h.Reads = append(h.Reads, read("r1", "a", 270, "w.1.2"))
			return h
		}},
		{"reader sees value vanish", RuleBack, func(h *History) *History {
			h.Reads = append(h.Reads, read("r1", "a", 270, ""))
			return h
		}},
		{"drain barrier broken", RuleDrain, func(_ *History) *History {
			h := small()
			h.Final.Registrations = append(h.Final.Registrations, RegEvent{Name: "w", Rev: 20})
			h.Drains = []Drain{{Name: "w", Incarnation: 20, Start: 150, End: 160}}
			h.Reads = []Read{read("r1", "a", 170, "w.1")}
			return h
		}},
		{"read after WaitApplied misses the write", RuleApplied, func(_ *History) *History {
			h := small()
			h.Applied = []Applied{{Token: Rev(14), Start: 130, End: 135}}
			h.Reads = []Read{read("r1", "a", 136, "")}
			return h
		}},
		{"WaitApplied returned before the watermark reached its index", RuleApplied, func(_ *History) *History {
			h := grouped()
			h.Applied = []Applied{{Token: tk(20, 2), Start: 105, End: 111, Watermark: tk(20, 1)}}
			return h
		}},
		{"watermark goes back", RuleWatermark, func(h *History) *History {
			h.Final.Watermarks = toks(13, 15, 14, 32)
			return h
		}},
		{"value used twice", RuleHistory, func(h *History) *History {
			h.Calls[2].Ops[0].Value = "w.1.1"
			return h
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.plant(copyOf(t, clean()))
			rep := Check(h)
			if rep.Count(tc.rule) == 0 {
				t.Fatalf("planted %s not flagged; report:\n%s", tc.rule, rep.Describe(0))
			}
			t.Logf("flagged: %s", rep.Describe(3))
		})
	}
}

// grouped is a clean history with group commit: transactions 20, 22 and
// 24 each store batches of both names, with indexes 0..2; a WaitApplied on
// 20.1 is followed by a read of b that does not show 20.2 yet, which is
// right (20.2 is after 20.1); an unknown submission was accepted at 24.2.
func grouped() *History {
	h := &History{
		Scenario: "grouped",
		Keys:     []string{"a", "b"},
		Calls: []Call{
			groupCall("c1", "w", 10, 100, 110, OK, tk(20, 0), set("a", "w.1")),
			groupCall("c2", "v", 11, 100, 110, OK, tk(20, 1), set("a", "v.1")),
			groupCall("c3", "w", 10, 100, 110, OK, tk(20, 2), set("b", "w.2")),
			groupCall("c4", "v", 11, 120, 130, OK, tk(22, 0), del("a")),
			groupCall("c5", "w", 10, 120, 130, OK, tk(22, 1), set("b", "w.3")),
			groupCall("c6", "v", 11, 140, 150, OK, tk(24, 0), set("a", "v.2")),
			groupCall("c7", "w", 10, 140, 150, OK, tk(24, 1), set("a", "w.4")),
			call("c8", "v", 11, 140, 150, Unknown, 0, set("b", "v.3")),
		},
		Reads: []Read{
			read("r1", "a", 112, "v.1"),
			read("r3", "b", 112, ""),
			read("r1", "b", 114, "w.2"),
			read("r2", "a", 116, "v.1"),
			read("r1", "a", 135, ""),
			read("r1", "b", 137, "w.3"),
			read("r2", "a", 155, "w.4"),
			read("r2", "b", 157, "v.3"),
		},
		Applied: []Applied{{Token: tk(20, 1), Start: 105, End: 111}},
		Final: Final{
			Memcached:     map[string]Item{"a": {Found: true, Value: "w.4"}, "b": {Found: true, Value: "v.3"}},
			Watermark:     tk(24, 2),
			Registrations: []RegEvent{{Name: "w", Rev: 10}, {Name: "v", Rev: 11}},
			Terms:         []int64{5},
			Watermarks:    []Token{tk(20, 1), tk(20, 2), tk(22, 1), tk(24, 2)},
		},
	}
	accept(h, map[string]Token{"c8": tk(24, 2)})
	return h
}

func TestGroupedHistoryHasNoViolation(t *testing.T) {
	rep := Check(copyOf(t, grouped()))
	if !rep.OK() || len(rep.DeleteWindows) != 0 {
		t.Fatalf("grouped history reported:\n%s", rep.Describe(0))
	}
	s := rep.Stats
	if s.OK != 7 || s.UnknownAccepted != 1 || s.Indexed != 4 || s.SharedTxns != 3 || s.MaxGroup != 3 {
		t.Fatalf("stats %+v", s)
	}
	if !strings.Contains(rep.Summary(), "indexed=4 shared-txns=3 max-group=3") {
		t.Fatalf("summary %q", rep.Summary())
	}
}

// indexOf returns the position of batch id in h.Final.Accepted.
func indexOf(t *testing.T, h *History, id string) int {
	t.Helper()
	for i, a := range h.Final.Accepted {
		if a.ID == id {
			return i
		}
	}
	t.Fatalf("batch %s not accepted", id)
	return -1
}

// Each of these breaches is told apart from a clean history only by the
// batches' indexes: with revisions alone, the batches of one transaction
// are unordered, and a watermark or WaitApplied on R covers all of R.
func TestPlantedGroupViolationsAreFlagged(t *testing.T) {
	cases := []struct {
		name  string
		rule  string // "" when the planted history is allowed
		plant func(t *testing.T, h *History)
	}{
		{"same key replayed against the index order", RuleFinal, func(_ *testing.T, h *History) {
			// v.2 is 24.0, w.4 is 24.1: the final value must be w.4.
			h.Final.Memcached["a"] = Item{Found: true, Value: "v.2"}
		}},
		{"reader goes back within one transaction", RuleBack, func(_ *testing.T, h *History) {
			h.Reads = append(h.Reads, read("r2", "a", 160, "v.2"))
		}},
		{"stale within one transaction across readers", RuleStale, func(_ *testing.T, h *History) {
			h.Reads = append(h.Reads, read("r4", "a", 160, "v.2"))
		}},
		{"order across keys within one transaction", RuleOrder, func(_ *testing.T, h *History) {
			// r4 saw b = w.2 (20.2, name w) by 114, so a must show w's
			// w.1 (20.0) or later, not nothing. Without the WaitApplied,
			// which requires it too, only the order does.
			h.Applied = nil
			h.Reads = []Read{read("r4", "b", 113, "w.2"), read("r4", "a", 115, "")}
		}},
		{"order across names within one round is not required", "", func(_ *testing.T, h *History) {
			// r4 saw b = w.2 (20.2, name w), then a = w.1 (20.0): v's v.1
			// (20.1) is another name's, which may land after w's writes
			// of the same round.
			h.Applied = nil
			h.Reads = []Read{read("r4", "b", 113, "w.2"), read("r4", "a", 115, "w.1")}
		}},
		{"WaitApplied on R.1 does not show R.1", RuleApplied, func(_ *testing.T, h *History) {
			h.Reads = append(h.Reads, read("r4", "a", 112, "w.1"))
		}},
		{"watermark R.1 counted R.2 as applied", RuleLost, func(_ *testing.T, h *History) {
			h.Final.Watermark = tk(24, 1)
			h.Final.Watermarks[len(h.Final.Watermarks)-1] = tk(24, 1)
		}},
		{"watermark goes back within one transaction", RuleWatermark, func(_ *testing.T, h *History) {
			h.Final.Watermarks = []Token{tk(20, 2), tk(20, 1), tk(22, 1), tk(24, 2)}
		}},
		{"acknowledged with another index than stored", RuleLost, func(t *testing.T, h *History) {
			h.Final.Accepted[indexOf(t, h, "c2")].Token = tk(20, 3)
		}},
		{"two batches with one token", RuleToken, func(t *testing.T, h *History) {
			h.Final.Accepted[indexOf(t, h, "c3")].Token = tk(20, 1)
			h.Calls[2].Token = tk(20, 1)
		}},
		{"one transaction with two incarnations of a name", RuleFence, func(_ *testing.T, h *History) {
			// w/21 registered at 21; transaction 22 holds w/21's batch and
			// w/10's c5.
			h.Final.Registrations = append(h.Final.Registrations, RegEvent{Name: "w", Rev: 21})
			h.Calls = append(h.Calls, groupCall("c9", "w", 21, 120, 130, OK, tk(22, 2), set("b", "w.5")))
			h.Final.Accepted = append(h.Final.Accepted, Accepted{ID: "c9", Name: "w", Incarnation: 21, Token: tk(22, 2), Ops: []Op{set("b", "w.5")}})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := copyOf(t, grouped())
			tc.plant(t, h)
			rep := Check(h)
			if tc.rule == "" {
				if !rep.OK() {
					t.Fatalf("allowed history reported:\n%s", rep.Describe(0))
				}
				return
			}
			if rep.Count(tc.rule) == 0 {
				t.Fatalf("planted %s not flagged; report:\n%s", tc.rule, rep.Describe(0))
			}
			t.Logf("flagged: %s", rep.Describe(3))
		})
	}
}
