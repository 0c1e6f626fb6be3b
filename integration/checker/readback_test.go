package checker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// readBackLog writes judgements as pkg/readback logs them, through slog's
// text handler, between lines of other messages.
func readBackLog(rbs ...ReadBack) string {
	var b bytes.Buffer
	log := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Info("became leader", "term", 2)
	for _, rb := range rbs {
		attrs := []any{"result", rb.Result, "key", rb.Key, "kind", rb.Kind, "term", rb.Term, "found_term", rb.FoundTerm,
			"token", "12.0", "server", "127.0.0.1:1"}
		if rb.Unlogged > 0 {
			attrs = append(attrs, "unlogged_before", rb.Unlogged)
		}
		log.Warn("read back", attrs...)
	}
	log.Info("stepping down")
	return b.String()
}

func TestParseReadBacks(t *testing.T) {
	want := []ReadBack{
		{Node: "n1", Key: "a key=with \"quotes\"", Kind: "set", Result: "ok", Term: 3, FoundTerm: 3},
		{Node: "n1", Key: "b", Kind: "delete", Result: "stale", Term: 4, FoundTerm: 2, Unlogged: 7},
	}
	got := ParseReadBacks("n1", readBackLog(want...))
	if len(got) != len(want) {
		t.Fatalf("parsed %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("judgement %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// An older leader's item is the delete window, counted and bounded by the
// leaderships that ended; anything else stale, and anything misplaced, is a
// violation.
func TestReadBackRule(t *testing.T) {
	base := func(rbs ...ReadBack) *History {
		h := windowHistory([]int64{5, 15})
		h.ReadBacks = rbs
		return h
	}
	ok := ReadBack{Node: "n", Key: "a", Kind: "set", Result: "ok", Term: 2, FoundTerm: 2}
	window := ReadBack{Node: "n", Key: "a", Kind: "delete", Result: "stale", Term: 2, FoundTerm: 1}
	for _, tc := range []struct {
		name      string
		h         *History
		violation string
	}{
		{"clean", base(ok, ok, ReadBack{Node: "n", Key: "b", Kind: "set", Result: "missing", Term: 2}), ""},
		{"in the window", base(ok, window), ""},
		{"same term stale", base(ReadBack{Node: "n", Key: "a", Kind: "set", Result: "stale", Term: 2, FoundTerm: 2}), "outside the delete window"},
		{"newer term stale", base(ReadBack{Node: "n", Key: "a", Kind: "delete", Result: "stale", Term: 2, FoundTerm: 3}), "outside the delete window"},
		{"misplaced", base(ReadBack{Node: "n", Key: "a", Kind: "set", Result: "misplaced", Term: 2}), "present on another"},
		{"beyond the bound", base(window, window, window, window, window, window, window, window, window), "leaderships ended"},
		{"unlogged", base(ReadBack{Node: "n", Key: "a", Kind: "set", Result: "missing", Term: 2, Unlogged: 3}), "cannot be checked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(tc.h)
			var got []string
			for _, v := range rep.Violations {
				if v.Rule == RuleReadBack {
					got = append(got, v.String())
				}
			}
			switch {
			case tc.violation == "" && len(got) > 0:
				t.Fatalf("violations %v", got)
			case tc.violation != "" && (len(got) != 1 || !strings.Contains(got[0], tc.violation)):
				t.Fatalf("violations %v, want one saying %q", got, tc.violation)
			}
			if st := rep.Stats.ReadBacks; st.Judged != len(tc.h.ReadBacks) || st.Bound != DefaultStepWrites {
				t.Fatalf("stats %+v", st)
			}
		})
	}
	st := ReadBackStats{Judged: 3000, OK: 2990, Missing: 10}
	if got := st.Nines(); got != "3000 of 3000 consistent: at least 3.0 nines (95% confidence)" {
		t.Errorf("nines %q", got)
	}
	st = ReadBackStats{Judged: 1000, Stale: 2, InWindow: 1}
	if got := st.Nines(); got != "999 of 1000 consistent: 3.0 nines" {
		t.Errorf("nines %q", got)
	}
}
