package checker

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ReadBack is one judgement of a leader's read-back (pkg/readback), as the
// node logged it: the key the leader wrote, the write's kind and term, what
// the leader found when it read the key back from the server its ring
// names, and the term of the item it found (0 when none).
type ReadBack struct {
	Node      string `json:"node"`
	Key       string `json:"key"`
	Kind      string `json:"kind"`
	Result    string `json:"result"`
	Term      uint64 `json:"term"`
	FoundTerm uint64 `json:"found_term"`
	// Unlogged is how many findings other than ok the node held back
	// before this one (its log's bound on warn lines).
	Unlogged int `json:"unlogged,omitempty"`
}

// readBackMsg is the message pkg/readback logs each judgement with.
const readBackMsg = `msg="read back"`

// ParseReadBacks returns the read-back judgements in a node's log (slog's
// text format); lines of other messages are skipped.
func ParseReadBacks(node, log string) []ReadBack {
	var out []ReadBack
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, readBackMsg) {
			continue
		}
		f := logFields(line)
		term, _ := strconv.ParseUint(f["term"], 10, 64)
		found, _ := strconv.ParseUint(f["found_term"], 10, 64)
		unlogged, _ := strconv.Atoi(f["unlogged_before"])
		out = append(out, ReadBack{Node: node, Key: f["key"], Kind: f["kind"], Result: f["result"], Term: term, FoundTerm: found,
			Unlogged: unlogged})
	}
	return out
}

// logFields splits a slog text line into its key=value pairs, unquoting
// quoted values.
func logFields(line string) map[string]string {
	f := map[string]string{}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok || strings.Contains(k, " ") {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		f[k] = v
		line = rest
	}
	return f
}

// ReadBackStats counts the leaders' read-back judgements (History.ReadBacks)
// by result; InWindow counts the stale ones that fit the delete window.
type ReadBackStats struct {
	Judged    int `json:"judged"`
	OK        int `json:"ok"`
	Missing   int `json:"missing"`
	Stale     int `json:"stale"`
	InWindow  int `json:"in_window"`
	Misplaced int `json:"misplaced"`
	// Bound is the most in-window findings RuleReadBack allows: one step
	// of writes per leadership that ended (zero without etcd's history of
	// terms, when nothing is bounded).
	Bound int `json:"bound"`
}

// Inconsistent counts the judgements that found what a reader must never
// see: misplaced items, and stale ones outside the delete window.
func (s ReadBackStats) Inconsistent() int { return s.Stale - s.InWindow + s.Misplaced }

// Nines says how consistent the read-backs were, as nines: the share of
// judgements a reader could trust, outside the delete window. With no
// inconsistent judgement it is the bound the sample supports at 95%
// confidence (at most 3/N inconsistent, the rule of three).
func (s ReadBackStats) Nines() string {
	switch bad := s.Inconsistent(); {
	case s.Judged == 0:
		return "no read-backs"
	case bad == 0:
		return fmt.Sprintf("%d of %d consistent: at least %.1f nines (95%% confidence)", s.Judged, s.Judged, math.Log10(float64(s.Judged)/3))
	default:
		return fmt.Sprintf("%d of %d consistent: %.1f nines", s.Judged-bad, s.Judged, -math.Log10(float64(bad)/float64(s.Judged)))
	}
}

// checkReadBack holds the leaders' read-backs to G5 and G6 (RuleReadBack):
// nothing misplaced, and nothing stale but what the delete window allows,
// an item of an older term over a key the newer leader wrote or deleted
// (a former leader's add on an absent key), at most one step of writes per
// leadership that ended.
func (c *checker) checkReadBack() {
	st := &c.rep.Stats.ReadBacks
	for _, rb := range c.h.ReadBacks {
		if rb.Unlogged > 0 {
			c.violate(RuleReadBack, "", "unlogged|"+rb.Node,
				"%s held back %d read-back findings other than ok from its log (its bound on warn lines): they cannot be checked",
				rb.Node, rb.Unlogged)
		}
		st.Judged++
		switch rb.Result {
		case "ok":
			st.OK++
		case "missing":
			st.Missing++
		case "stale":
			st.Stale++
			if rb.FoundTerm != 0 && rb.FoundTerm < rb.Term {
				st.InWindow++
				continue
			}
			c.violate(RuleReadBack, rb.Key, "stale|"+rb.Node,
				"%s read back its %s of term %d and found the item of term %d: not an older leader's, so outside the delete window",
				rb.Node, rb.Kind, rb.Term, rb.FoundTerm)
		case "misplaced":
			st.Misplaced++
			c.violate(RuleReadBack, rb.Key, "misplaced|"+rb.Node,
				"%s read back its %s of term %d: absent from the server its ring names, present on another", rb.Node, rb.Kind, rb.Term)
		default:
			c.violate(RuleHistory, rb.Key, "readback|"+rb.Result, "read-back with an unknown result %q", rb.Result)
		}
	}
	bound, ended, step, ok := c.windowBound()
	if !ok {
		return
	}
	st.Bound = bound
	if st.InWindow > st.Bound {
		c.violate(RuleReadBack, "", "bound",
			"%d read-backs found an older leader's item; %d leaderships ended, each of which can recreate at most %d (one step)",
			st.InWindow, ended, step)
	}
}
