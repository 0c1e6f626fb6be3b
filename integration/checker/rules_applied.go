package checker

import (
	"fmt"
	"math"
	"sort"
)

// The rules of this file check reads against what was known applied before
// they started: operations a read of another key showed applied (G2), a
// WaitApplied that returned (G8) and a drained registration (G7).

// requirement is the oldest operation a key must reflect from some moment
// on, and why.
type requirement struct {
	ref  *opRef
	rule string
	why  string
	at   int64 // when it became known
}

// point is a moment after which some operations are known applied.
type point struct {
	at    int64
	read  *Read // a value read: its operation was applied
	ref   *opRef
	tok   Token  // WaitApplied: the watermark reached tok
	drain *Drain // WaitDrained: the earlier incarnations are applied
	rule  int    // the requirementRule the point is of
}

// requirementRule is one rule of what keys must reflect once something is
// known applied: the moments it became known (points), and for one point
// and one key the oldest operation the key must reflect from then on
// (require; a nil ref when none).
type requirementRule struct {
	points  []point
	require func(p point, key string) requirement
}

// checkKnownApplied checks every read against the newest operation any of
// rules requires of its key by the time the read started. Points at the
// same moment are taken in the order of rules, and of equally new
// requirements the first stands.
func (c *checker) checkKnownApplied(rules ...func() requirementRule) {
	rs := make([]requirementRule, len(rules))
	var pts []point
	for i, rule := range rules {
		rs[i] = rule()
		for _, p := range rs[i].points {
			p.rule = i
			pts = append(pts, p)
		}
	}
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].at < pts[j].at })
	keys := c.allKeys()
	req := map[string]requirement{}
	next := 0
	for _, ri := range c.readsByStart {
		r := &c.h.Reads[ri]
		for ; next < len(pts) && pts[next].at < r.Start; next++ {
			p := pts[next]
			for _, k := range keys {
				q := rs[p.rule].require(p, k)
				if q.ref == nil {
					continue
				}
				if cur, ok := req[k]; !ok || cur.ref.pos.less(q.ref.pos) {
					req[k] = q
				}
			}
		}
		if q, ok := req[r.Key]; ok {
			c.checkRequirement(r, q)
		}
	}
}

// readPoints are the values read: each shows its operation applied by the
// end of the read.
func (c *checker) readPoints() []point {
	var pts []point
	for i := range c.h.Reads {
		r := &c.h.Reads[i]
		if !r.Found {
			continue
		}
		if ref := c.refOf(r.Key, r.Value); ref != nil {
			pts = append(pts, point{at: r.End, read: r, ref: ref})
		}
	}
	return pts
}

// requireG2Order is G2-order: once a reader saw operation B, every other key
// must reflect the last operation of B's name ordered before B. Token order
// holds within a name (all its incarnations) and within a key; different
// names' writes of one round may land in either order (README, "Order
// across names").
func (c *checker) requireG2Order() requirementRule {
	return requirementRule{points: c.readPoints(), require: func(p point, k string) requirement {
		if k == p.read.Key {
			return requirement{}
		}
		before := c.lastBeforeOfName(k, p.ref.pos, p.ref.call.Name)
		if before == nil || c.opAfter(k, p.ref.pos, p.at) {
			// A newer operation on k may have been applied in the same
			// run as p's, skipping the older ones.
			return requirement{}
		}
		return requirement{ref: before, rule: RuleOrder, at: p.at,
			why: fmt.Sprintf("reader %s saw %s at %s", p.read.Reader, p.ref, ms(p.read.Start))}
	}}
}

// requireG8Applied is G8-applied: once WaitApplied(t) returned, every key
// must reflect its last operation up to t.
func (c *checker) requireG8Applied() requirementRule {
	var pts []point
	for _, a := range c.h.Applied {
		pts = append(pts, point{at: a.End, tok: a.Token})
	}
	return requirementRule{points: pts, require: func(p point, k string) requirement {
		// Up to p.tok itself: a batch of the same transaction with a
		// higher index is not covered.
		return requirement{ref: c.lastUpTo(k, pos{p.tok, math.MaxInt}), rule: RuleApplied, at: p.at,
			why: fmt.Sprintf("WaitApplied(%s) returned at %s", p.tok, ms(p.at))}
	}}
}

// requireG7Drain is G7-drain: once a registration with WaitDrained
// returned, every key must reflect the last operation of the earlier
// incarnations of its name.
func (c *checker) requireG7Drain() requirementRule {
	var pts []point
	for i := range c.h.Drains {
		pts = append(pts, point{at: c.h.Drains[i].End, drain: &c.h.Drains[i]})
	}
	return requirementRule{points: pts, require: func(p point, k string) requirement {
		return requirement{ref: c.lastOfEarlier(k, p.drain.Name, p.drain.Incarnation), rule: RuleDrain, at: p.at,
			why: fmt.Sprintf("registration %s/%d with WaitDrained returned at %s",
				p.drain.Name, p.drain.Incarnation, ms(p.at))}
	}}
}

// checkRequirement checks a read against the oldest operation its key must
// reflect.
func (c *checker) checkRequirement(r *Read, q requirement) {
	need := q.ref
	if r.Found {
		ref := c.refOf(r.Key, r.Value)
		if ref == nil || !ref.pos.less(need.pos) {
			return
		}
		if c.isDeleteWindow(r.Key, ref, need.pos, q.at, r) {
			c.window(r.Key, r.Value, "req|"+r.Value, "reader %s saw %s at %s although %s was applied: %s",
				r.Reader, ref, ms(r.Start), need, q.why)
			return
		}
		c.violate(q.rule, r.Key, r.Value+"|"+need.call.ID, "reader %s saw %s at %s although %s must have been applied: %s",
			r.Reader, ref, ms(r.Start), need, q.why)
		return
	}
	if need.op.Kind == KindDelete || c.deleteAfter(r.Key, need.pos, r.End) != nil ||
		c.maybeDelete(r.Key, r.End) || c.wiped(r.Key, need.call.Start, r.End) {
		return
	}
	c.violate(q.rule, r.Key, "absent|"+need.call.ID,
		"reader %s found the key absent at %s although %s must have been applied: %s",
		r.Reader, ms(r.Start), need, q.why)
}

// checkG8WaitReturned is G8-applied at the moment a WaitApplied returned:
// the watermark read right after it must have reached its token. A wait
// released early shows here even when the leader's next round wrote the
// key before any reader looked.
func (c *checker) checkG8WaitReturned() {
	for _, a := range c.h.Applied {
		if !a.Watermark.IsZero() && a.Watermark.Less(a.Token) {
			c.violate(RuleApplied, "", "wm|"+a.Token.String(),
				"WaitApplied(%s) returned at %s, and the watermark read right after was %s",
				a.Token, ms(a.End), a.Watermark)
		}
	}
}

// checkWindows counts the stale values the delete windows excused and
// bounds them: each leadership that ended can recreate at most one step's
// writes (RuleWindows). Without etcd's history the terms are unknown and
// nothing is bounded.
func (c *checker) checkWindows() {
	st := &c.rep.Stats
	st.Recreations = len(c.recreated)
	bound, ended, step, ok := c.windowBound()
	if !ok {
		return
	}
	st.RecreationBound = bound
	if st.Recreations > st.RecreationBound {
		c.violate(RuleWindows, "", "bound",
			"%d stale values recreated over deleted keys; %d leaderships ended, each of which can recreate at most %d (one step)",
			st.Recreations, ended, step)
	}
}

// windowBound returns how many keys the delete windows may recreate: one
// step of writes for each leadership that ended. ok is false without
// etcd's history, when the terms are unknown and nothing is bounded.
func (c *checker) windowBound() (bound, ended, step int, ok bool) {
	if !c.h.Final.EtcdHistory {
		return 0, 0, 0, false
	}
	step = c.h.StepWrites
	if step <= 0 {
		step = DefaultStepWrites
	}
	ended = max(len(c.terms)-1, 0)
	return step * ended, ended, step, true
}
