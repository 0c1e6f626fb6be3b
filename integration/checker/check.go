package checker

import (
	"fmt"
	"sort"
	"strings"
)

// Rules a violation breaks, named after the guarantees of docs/guarantees.md.
const (
	// RulePhantom: a reader or the final state holds a value no operation of
	// the history wrote, a value on another key than it was written to, a
	// value seen before its submission started, or etcd holds a batch no
	// caller submitted.
	RulePhantom = "G1-phantom"
	// RuleRefusedApplied: a refused (or never accepted) operation was
	// applied: its value was seen, is in the final state, or etcd holds it.
	RuleRefusedApplied = "G1-refused-applied"
	// RuleFence: etcd accepted a batch whose incarnation was not the current
	// registration of its name at the batch's revision.
	RuleFence = "G1-fence"
	// RuleToken: two batches got the same token (revision and index), so
	// token order does not order them.
	RuleToken = "G2-token"
	// RuleOrder: after a reader saw operation B applied, some key showed a
	// value older than an operation of B's name ordered before B (G2: token
	// order across keys within a name and across its incarnations; batches
	// of one transaction in their index order). Different names' writes of
	// one round may land in either order; the watermark orders them (see
	// RuleApplied).
	RuleOrder = "G2-order"
	// RuleLost: an acknowledged operation is not in etcd with its token
	// (revision and index), is above the final watermark, or batches are
	// still pending at the end.
	RuleLost = "G3-lost"
	// RuleFinal: a key's final value is not the token-ordered replay of the
	// accepted operations.
	RuleFinal = "G3-final-state"
	// RuleOldFirst: an accepted operation of a superseded or expired
	// incarnation was never applied (G4).
	RuleOldFirst = "G4-old-first"
	// RuleStale: a reader saw a key's value older than one another reader
	// had already seen, or the key absent with no later delete (G5).
	RuleStale = "G5-stale"
	// RuleBack: a reader saw a key's value go back to an older token's, or
	// to absent with no later delete (G6).
	RuleBack = "G6-back"
	// RuleDrain: after a registration with WaitDrained returned, a key showed
	// a value older than an operation of an earlier incarnation (G7).
	RuleDrain = "G7-drain"
	// RuleApplied: after WaitApplied(t) returned, a key showed a value older
	// than an operation with a token up to t (G8).
	RuleApplied = "G8-applied"
	// RuleWatermark: the applied watermark written to etcd went back (in
	// token order: "R.3" to "R.1" is back).
	RuleWatermark = "G8-watermark"
	// RuleWindows: more keys were recreated over a newer leader's delete
	// (the delete windows, reported apart) than the leaders' steps allow:
	// a former leader stops at its next step, so each leadership that
	// ended can recreate at most one step's writes (History.StepWrites).
	RuleWindows = "G5-delete-windows"
	// RuleReadBack: a leader's read-back (pkg/readback) found a key
	// misplaced, or stale other than by an older leader's item in the
	// delete window, or more of those than one step of writes per
	// leadership that ended (History.ReadBacks).
	RuleReadBack = "G5-readback"
	// RuleHistory: the history itself is malformed (a value used twice).
	RuleHistory = "history"
)

// Violation is one broken guarantee, with the evidence found first and the
// number of reads or items that showed the same breach.
type Violation struct {
	Rule  string `json:"rule"`
	Key   string `json:"key,omitempty"`
	Msg   string `json:"msg"`
	Count int    `json:"count"`
}

// String formats the violation as "RULE: key KEY: MSG (seen N times)".
func (v Violation) String() string {
	s := v.Rule + ": "
	if v.Key != "" {
		s += "key " + v.Key + ": "
	}
	s += v.Msg
	if v.Count > 1 {
		s += fmt.Sprintf(" (seen %d times)", v.Count)
	}
	return s
}

// Stats counts what a history holds.
type Stats struct {
	Calls           int `json:"calls"`
	Ops             int `json:"ops"`
	OK              int `json:"ok"`
	Refused         int `json:"refused"`
	Unknown         int `json:"unknown"`
	UnknownAccepted int `json:"unknown_accepted"`
	Incarnations    int `json:"incarnations"`
	Reads           int `json:"reads"`
	Misses          int `json:"misses"`
	Applied         int `json:"applied"`
	Drains          int `json:"drains"`
	Faults          int `json:"faults"`
	Wipes           int `json:"wipes"`
	// Indexed counts the acknowledged submissions whose token has a
	// non-zero index: they shared a transaction with a batch before them.
	Indexed int `json:"indexed"`
	// SharedTxns counts the transactions that stored more than one batch,
	// and MaxGroup is the most batches one transaction stored (from etcd's
	// history when it was read, else from the acknowledged tokens).
	SharedTxns int `json:"shared_txns"`
	MaxGroup   int `json:"max_group"`
	// Overlap is the most faults in place at one moment (a fault is in
	// place from At to Healed; one with no Healed is a moment only).
	Overlap int `json:"overlap"`
	// Kinds are the fault kinds injected, sorted, each once.
	Kinds []string `json:"kinds,omitempty"`
	// Recreations counts the keys' stale values the delete windows
	// excused, each value once however often it was read, and
	// RecreationBound is the most RuleWindows allows (zero without etcd's
	// history of terms).
	Recreations     int `json:"recreations"`
	RecreationBound int `json:"recreation_bound"`
	// ReadBacks counts the leaders' read-back judgements.
	ReadBacks ReadBackStats `json:"read_backs"`
}

// Report is the result of Check.
type Report struct {
	Stats Stats `json:"stats"`
	// Violations are breaches of the guarantees, grouped by rule in the
	// order Check runs the rules.
	Violations []Violation `json:"violations"`
	// DeleteWindows are stale values that fit exactly the window package
	// memfence documents: a former leader's set of an older token landing
	// on a key a newer leader had deleted. They are reported apart from the
	// violations.
	DeleteWindows []Violation `json:"delete_windows"`
	// Notes are facts worth knowing that are not breaches (values lost
	// with a memcached restart).
	Notes []string `json:"notes"`
}

// OK reports whether no guarantee was broken.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Summary is a one-line account of the history and the verdict.
func (r Report) Summary() string {
	s := r.Stats
	return fmt.Sprintf("ops=%d calls=%d ok=%d refused=%d unknown=%d (accepted %d) indexed=%d "+
		"shared-txns=%d max-group=%d incarnations=%d reads=%d applied-waits=%d drains=%d faults=%d "+
		"wipes=%d violations=%d delete-windows=%d recreations=%d/%d read-backs=%d stale=%d(window %d/%d) misplaced=%d overlap=%d kinds=%s",
		s.Ops, s.Calls, s.OK, s.Refused, s.Unknown, s.UnknownAccepted, s.Indexed,
		s.SharedTxns, s.MaxGroup, s.Incarnations, s.Reads, s.Applied, s.Drains, s.Faults,
		s.Wipes, len(r.Violations), len(r.DeleteWindows), s.Recreations, s.RecreationBound,
		s.ReadBacks.Judged, s.ReadBacks.Stale, s.ReadBacks.InWindow, s.ReadBacks.Bound, s.ReadBacks.Misplaced, s.Overlap, kinds(s.Kinds))
}

// kinds formats fault kinds for the summary: a comma list without spaces
// ("kill -9" is "kill-9"), "-" for none.
func kinds(ks []string) string {
	if len(ks) == 0 {
		return "-"
	}
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = strings.ReplaceAll(k, " ", "")
	}
	return strings.Join(out, ",")
}

// faultStats returns the most faults in place at once and the kinds.
func faultStats(fs []Fault) (int, []string) {
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	seen := map[string]bool{}
	var ks []string
	for _, f := range fs {
		if !seen[f.Kind] {
			seen[f.Kind] = true
			ks = append(ks, f.Kind)
		}
		end := max(f.Healed, f.At)
		edges = append(edges, edge{f.At, 1}, edge{end, -1})
	}
	// At one instant injections come before heals, so a fault that is a
	// moment only still counts.
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at != edges[j].at {
			return edges[i].at < edges[j].at
		}
		return edges[i].delta > edges[j].delta
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.delta
		peak = max(peak, cur)
	}
	sort.Strings(ks)
	return peak, ks
}

// Count returns how many violations break rule.
func (r Report) Count(rule string) int {
	n := 0
	for _, v := range r.Violations {
		if v.Rule == rule {
			n++
		}
	}
	return n
}

// Describe formats the report's violations and windows, at most max of each
// (all when max <= 0).
func (r Report) Describe(max int) string {
	var b strings.Builder
	write := func(title string, vs []Violation) {
		if len(vs) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s (%d):\n", title, len(vs))
		for i, v := range vs {
			if max > 0 && i == max {
				fmt.Fprintf(&b, "  ... %d more\n", len(vs)-max)
				break
			}
			fmt.Fprintf(&b, "  %s\n", v)
		}
	}
	write("violations", r.Violations)
	write("delete windows (documented, not violations)", r.DeleteWindows)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// Check checks h and reports every violation it finds.
func Check(h *History) Report {
	c := newChecker(h)
	c.index()
	for _, rule := range []func(){
		c.checkHistoryValues,
		c.checkG1RefusedApplied,
		c.checkG1Fence,
		c.checkG1Phantom,
		c.checkG2Token,
		c.checkG3Lost,
		c.checkG3FinalState,
		c.checkG4OldFirst,
		c.checkG5Stale,
		c.checkG6Back,
		// A read is held to the newest operation any of these three
		// requires of its key, so they share one sweep over the reads.
		func() { c.checkKnownApplied(c.requireG2Order, c.requireG8Applied, c.requireG7Drain) },
		c.checkG8WaitReturned,
		c.checkG8Watermark,
		// After every rule that excuses a delete window.
		c.checkWindows,
		c.checkReadBack,
		c.checkLeaks,
	} {
		rule()
	}
	for _, k := range c.order {
		c.rep.Violations = append(c.rep.Violations, *c.found[k])
	}
	for _, k := range c.winOrder {
		c.rep.DeleteWindows = append(c.rep.DeleteWindows, *c.wins[k])
	}
	return *c.rep
}

// violate records a violation; dedup groups repeats of the same breach.
func (c *checker) violate(rule, key, dedup, format string, args ...any) {
	id := rule + "|" + key + "|" + dedup
	if v, ok := c.found[id]; ok {
		v.Count++
		return
	}
	c.found[id] = &Violation{Rule: rule, Key: key, Msg: fmt.Sprintf(format, args...), Count: 1}
	c.order = append(c.order, id)
}

// window records a delete window, the stale value of key read; dedup
// groups repeats of the same one.
func (c *checker) window(key, value, dedup, format string, args ...any) {
	c.recreated[key+"|"+value] = true
	id := key + "|" + dedup
	if v, ok := c.wins[id]; ok {
		v.Count++
		return
	}
	c.wins[id] = &Violation{Rule: "delete-window", Key: key, Msg: fmt.Sprintf(format, args...), Count: 1}
	c.winOrder = append(c.winOrder, id)
}

// ms formats a time of the history in seconds.
func ms(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }
