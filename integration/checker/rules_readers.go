package checker

import "sort"

// The rules of this file check what readers saw of a key against what they
// or other readers had seen of it before.

// readerState is what one reader has seen of one key.
type readerState struct {
	set        bool
	pos        pos
	ref        *opRef // the operation that set pos
	fromDelete bool   // pos is a delete that explained a miss
	wiped      bool   // a memcached restart explained a miss
	at         int64  // start of the read that set pos
}

// checkG6Back checks that no reader sees a key go back (G6).
func (c *checker) checkG6Back() {
	byReader := map[string][]int{}
	var readers []string
	for i, r := range c.h.Reads {
		if _, ok := byReader[r.Reader]; !ok {
			readers = append(readers, r.Reader)
		}
		byReader[r.Reader] = append(byReader[r.Reader], i)
	}
	for _, name := range readers {
		idx := byReader[name]
		sort.SliceStable(idx, func(i, j int) bool { return c.h.Reads[idx[i]].Start < c.h.Reads[idx[j]].Start })
		state := map[string]*readerState{}
		for _, i := range idx {
			r := &c.h.Reads[i]
			st := state[r.Key]
			if st == nil {
				st = &readerState{}
				state[r.Key] = st
			}
			if r.Found {
				c.backToOlder(r, st)
			} else {
				c.backToAbsent(r, st)
			}
		}
	}
}

// backToOlder checks a value r read against what its reader had seen of
// the key (st), and records it.
func (c *checker) backToOlder(r *Read, st *readerState) {
	ref := c.refOf(r.Key, r.Value)
	if ref == nil {
		return
	}
	if st.set && ref.pos.less(st.pos) {
		if c.isDeleteWindow(r.Key, ref, st.pos, st.at, r) {
			c.window(r.Key, r.Value, "back|"+r.Value, "reader %s saw %s at %s after it had seen %s applied at %s",
				r.Reader, ref, ms(r.Start), st.ref, ms(st.at))
		} else {
			c.violate(RuleBack, r.Key, r.Value, "reader %s saw %s at %s after it had seen %s at %s",
				r.Reader, ref, ms(r.Start), st.ref, ms(st.at))
		}
		return
	}
	*st = readerState{set: true, pos: ref.pos, ref: ref, at: r.Start}
}

// backToAbsent checks a miss r against what its reader had seen of the key
// (st): a memcached restart or a delete must explain it.
func (c *checker) backToAbsent(r *Read, st *readerState) {
	if !st.set || st.fromDelete || st.wiped {
		return
	}
	// A memcached restart explains a miss without telling what was
	// applied, so it is tried first; a delete explains it only as
	// "at least that delete was applied".
	if c.wiped(r.Key, st.at, r.End) {
		st.wiped = true
		return
	}
	if d := c.deleteAfter(r.Key, st.pos, r.End); d != nil {
		*st = readerState{set: true, pos: d.pos, ref: d, fromDelete: true, at: r.Start}
		return
	}
	if c.maybeDelete(r.Key, r.End) {
		return
	}
	c.violate(RuleBack, r.Key, "absent|"+st.ref.call.ID,
		"reader %s found the key absent at %s after it had seen %s at %s, and no later delete was submitted",
		r.Reader, ms(r.Start), st.ref, ms(st.at))
}

// checkG5Stale checks every read against what other readers had seen of its
// key before it started (G5).
func (c *checker) checkG5Stale() {
	pts := c.readPoints()
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].at < pts[j].at })
	seen := map[string]*topTwo{} // key -> the two readers that saw the newest
	next := 0
	for _, ri := range c.readsByStart {
		r := &c.h.Reads[ri]
		for ; next < len(pts) && pts[next].at < r.Start; next++ {
			p := pts[next]
			m := seen[p.read.Key]
			if m == nil {
				m = &topTwo{}
				seen[p.read.Key] = m
			}
			m.add(p.read.Reader, readerState{set: true, pos: p.ref.pos, ref: p.ref, at: p.read.Start})
		}
		c.staleAgainst(r, seen[r.Key])
	}
}

// staleAgainst checks a read against the newest that other readers had
// seen of its key (others) before it started.
func (c *checker) staleAgainst(r *Read, others *topTwo) {
	if others == nil {
		return
	}
	newest, who := others.except(r.Reader)
	if !newest.set {
		return
	}
	if r.Found {
		ref := c.refOf(r.Key, r.Value)
		if ref == nil || !ref.pos.less(newest.pos) {
			return
		}
		if c.isDeleteWindow(r.Key, ref, newest.pos, newest.at, r) {
			c.window(r.Key, r.Value, "stale|"+r.Value, "reader %s saw %s at %s after reader %s had seen %s at %s",
				r.Reader, ref, ms(r.Start), who, newest.ref, ms(newest.at))
			return
		}
		c.violate(RuleStale, r.Key, r.Value, "reader %s saw %s at %s after reader %s had seen %s at %s",
			r.Reader, ref, ms(r.Start), who, newest.ref, ms(newest.at))
		return
	}
	if c.deleteAfter(r.Key, newest.pos, r.End) != nil || c.maybeDelete(r.Key, r.End) || c.wiped(r.Key, newest.at, r.End) {
		return
	}
	c.violate(RuleStale, r.Key, "absent|"+newest.ref.call.ID,
		"reader %s found the key absent at %s after reader %s had seen %s at %s, and no later delete was submitted",
		r.Reader, ms(r.Start), who, newest.ref, ms(newest.at))
}

// topTwo keeps the newest position seen of a key by the two readers that
// saw the newest, which is all that "the newest seen by any other reader"
// needs, however many readers there are.
type topTwo struct {
	first, second   readerState
	firstR, secondR string
}

// add records that reader saw st.
func (t *topTwo) add(reader string, st readerState) {
	switch {
	case reader == t.firstR && t.first.set:
		if t.first.pos.less(st.pos) {
			t.first = st
		}
	case reader == t.secondR && t.second.set:
		if t.second.pos.less(st.pos) {
			t.second = st
		}
		if t.first.pos.less(t.second.pos) {
			t.first, t.second, t.firstR, t.secondR = t.second, t.first, t.secondR, t.firstR
		}
	case !t.first.set || t.first.pos.less(st.pos):
		t.second, t.secondR = t.first, t.firstR
		t.first, t.firstR = st, reader
	case !t.second.set || t.second.pos.less(st.pos):
		t.second, t.secondR = st, reader
	}
}

// except returns the newest seen by a reader other than reader.
func (t *topTwo) except(reader string) (readerState, string) {
	if t.firstR != reader {
		return t.first, t.firstR
	}
	return t.second, t.secondR
}

// isDeleteWindow reports whether a read r of the stale set o, when at
// least floor was known applied to key since floorAt, is exactly the window
// package memfence documents: a former leader, holding o since before a
// newer term was taken, recreates key after a newer leader deleted it. It
// needs the evidence of that sequence: a reader found key absent after
// floorAt and before r started, a delete at or after floor may have been
// applied by then, and a term was taken after o was accepted.
func (c *checker) isDeleteWindow(key string, o *opRef, floor pos, floorAt int64, r *Read) bool {
	if o.op.Kind != KindSet || !o.known || !c.termAfter(o.pos.tok.Revision) {
		return false
	}
	ms := c.misses[key]
	i := sort.Search(len(ms), func(i int) bool { return ms[i].Start >= floorAt })
	for ; i < len(ms) && ms[i].End < r.Start; i++ {
		refs := c.deletes[key]
		j := sort.Search(len(refs), func(j int) bool { return !refs[j].pos.less(floor) })
		for ; j < len(refs); j++ {
			if refs[j].call.Start < ms[i].End {
				return true
			}
		}
	}
	return false
}
