package checker

import (
	"encoding/json"
	"strconv"
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

func TestTokenJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Token
	}{{`"12"`, Rev(12)}, {`"12.3"`, tk(12, 3)}, {`12`, Rev(12)}, {`"0"`, Token{}}} {
		var got Token
		if err := json.Unmarshal([]byte(tc.in), &got); err != nil || got != tc.want {
			t.Errorf("unmarshal %s: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`"x"`, `"12."`, `"-1"`, `"1.2.3"`, `1.5`, `true`} {
		var got Token
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("unmarshal %s: no error, got %v", bad, got)
		}
	}
	b, err := json.Marshal(Call{ID: "c", Result: OK, Token: tk(7, 2)})
	if err != nil || !strings.Contains(string(b), `"token":"7.2"`) {
		t.Fatalf("marshal: %s %v", b, err)
	}
	if b, err := json.Marshal(Call{ID: "c", Result: Refused}); err != nil || strings.Contains(string(b), "token") {
		t.Fatalf("zero token written: %s %v", b, err)
	}
	// A history saved when tokens were revisions still loads.
	var h History
	old := `{"calls":[{"id":"c1","result":"ok","token":12}],"applied":[{"token":12}],"final":{"watermark":14,"watermarks":[12,14],"accepted":[{"id":"c1","token":12}]}}`
	if err := json.Unmarshal([]byte(old), &h); err != nil {
		t.Fatal(err)
	}
	if h.Calls[0].Token != Rev(12) || h.Applied[0].Token != Rev(12) || h.Final.Watermark != Rev(14) || h.Final.Watermarks[1] != Rev(14) || h.Final.Accepted[0].Token != Rev(12) {
		t.Fatalf("old history read as %+v", h)
	}
}

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
