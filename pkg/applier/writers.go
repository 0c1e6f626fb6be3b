package applier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// DefaultWriteConcurrency is the number of memcached writers used when
// Config.WriteConcurrency is zero.
const DefaultWriteConcurrency = 8

// An apply call writes each memcached key at most once (only the newest
// operation per key of the call), so its writes touch distinct keys. They
// are split by registration name into at most WriteConcurrency lanes; a lane
// makes its writes one after the other in token order, and the lanes run in
// parallel. So each name's writes keep their token order, and a key's writes
// keep theirs across calls because every write of a call is made before the
// call commits and the next call starts. Writes of different names within one
// call may land in any order.

// plannedWrite is one write of an apply call and the position, among the
// call's items, of the batch it belongs to.
type plannedWrite struct {
	item  int
	w     Write
	group string // the lane group: names that must stay in one lane
}

// rejection is an operation memcached refused for good, with the reason
// recorded when its batch is set aside.
type rejection struct {
	item   int
	reason string
}

// writeConcurrency is the configured number of writers.
func (a *applier) writeConcurrency() int {
	if a.cfg.WriteConcurrency <= 0 {
		return DefaultWriteConcurrency
	}
	return a.cfg.WriteConcurrency
}

// writeAll makes the writes of one apply call, in lanes by name. It returns,
// for each item with operations memcached refused for good, the reasons in
// the batch's order; or the first fatal error (ErrNotLeader,
// memfence.ErrFenced, a context error), after which the other lanes stop
// before their next write.
func (a *applier) writeAll(ctx context.Context, writes []plannedWrite) (map[int][]string, error) {
	lanes := partition(writes, a.writeConcurrency())
	if len(lanes) <= 1 {
		// One lane: written on this goroutine, exactly as a sequential
		// writer would.
		var lane []plannedWrite
		if len(lanes) == 1 {
			lane = lanes[0]
		}
		rej, err := a.writeLane(ctx, lane, false)
		if err != nil {
			return nil, err
		}
		return reasons(rej), nil
	}
	// The first lane to fail cancels lctx with its error as the cause; the
	// others see it before their next write (or in their retry backoff) and
	// stop.
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rejs := make([][]rejection, len(lanes))
	failed := make([]bool, len(lanes))
	run := func(l int) {
		var err error
		rejs[l], err = a.writeLane(lctx, lanes[l], true)
		if err != nil {
			failed[l] = true
			cancel(err)
		}
	}
	var wg sync.WaitGroup
	for l := 1; l < len(lanes); l++ {
		wg.Go(func() { run(l) })
	}
	run(0)
	wg.Wait()
	if slices.Contains(failed, true) {
		return nil, context.Cause(lctx)
	}
	return reasons(slices.Concat(rejs...)), nil
}

// readAheadKeys bounds the keys a lane reads with one multi-key gets before
// writing them.
const readAheadKeys = 64

// writeLane makes the writes of one lane one after the other, collecting
// the operations memcached refused for good and returning at the first
// other error. With stopWhenDone, it also returns before a write once ctx is
// done.
//
// The lane reads its keys ahead, readAheadKeys at a time, with one multi-key
// gets (memfence.Writer.Read), so a fenced write costs one round trip
// instead of two. The read is only a first guess: each write is still a cas
// on what was read, or an add when nothing was, and starts over with a fresh
// read if anything changed. When the read fails, each write reads for
// itself.
func (a *applier) writeLane(ctx context.Context, lane []plannedWrite, stopWhenDone bool) ([]rejection, error) {
	var rej []rejection
	var snap *memfence.Snapshot
	for i, pw := range lane {
		if stopWhenDone && ctx.Err() != nil {
			return rej, context.Cause(ctx)
		}
		if i%readAheadKeys == 0 && len(lane)-i > 1 {
			snap = a.readAhead(lane[i:min(len(lane), i+readAheadKeys)])
		}
		err := a.write(ctx, snap, pw.w)
		if errors.Is(err, memfence.ErrRejected) {
			o := pw.w.Op
			rej = append(rej, rejection{item: pw.item, reason: fmt.Sprintf("operation %d (%s %q): %v", pw.w.Index, o.Kind, o.Key, err)})
			continue
		}
		if err != nil {
			return rej, err
		}
	}
	return rej, nil
}

// readAhead reads the keys of writes with one multi-key gets; it returns
// nil, and each write then reads its own key, when the read fails.
func (a *applier) readAhead(writes []plannedWrite) *memfence.Snapshot {
	keys := make([]string, len(writes))
	for i, pw := range writes {
		keys[i] = pw.w.Op.Key
	}
	snap, err := a.cfg.Memcached.Read(keys)
	if err != nil {
		return nil
	}
	return snap
}

// reasons groups rejections by item, keeping their order. A batch's
// operations are all in one lane, so they arrive in the batch's order.
func reasons(rej []rejection) map[int][]string {
	if len(rej) == 0 {
		return nil
	}
	m := make(map[int][]string)
	for _, r := range rej {
		m[r.item] = append(m[r.item], r.reason)
	}
	return m
}

// partition splits writes into at most n lanes, all writes of a group in one
// lane and in their order among writes. Names are placed, the busiest first,
// on the lane with the fewest writes so far. It returns writes itself as the
// only lane when there is one name or n is 1, and no lane when writes is
// empty.
func partition(writes []plannedWrite, n int) [][]plannedWrite {
	if len(writes) == 0 {
		return nil
	}
	if n <= 1 {
		return [][]plannedWrite{writes}
	}
	type nameLoad struct {
		name  string
		first int // position of the name's first write
		count int
	}
	idx := make(map[string]int) // group -> position in names
	var names []nameLoad
	for i, pw := range writes {
		j, ok := idx[pw.group]
		if !ok {
			j = len(names)
			idx[pw.group] = j
			names = append(names, nameLoad{name: pw.group, first: i})
		}
		names[j].count++
	}
	if len(names) == 1 {
		return [][]plannedWrite{writes}
	}
	slices.SortFunc(names, func(x, y nameLoad) int {
		return cmp.Or(cmp.Compare(y.count, x.count), cmp.Compare(x.first, y.first))
	})
	loads := make([]int, min(n, len(names)))
	laneOf := make(map[string]int, len(names))
	for _, nl := range names {
		l := 0
		for k := range loads {
			if loads[k] < loads[l] {
				l = k
			}
		}
		laneOf[nl.name] = l
		loads[l] += nl.count
	}
	lanes := make([][]plannedWrite, len(loads))
	for l := range lanes {
		lanes[l] = make([]plannedWrite, 0, loads[l])
	}
	for _, pw := range writes {
		l := laneOf[pw.group]
		lanes[l] = append(lanes[l], pw)
	}
	return lanes
}

// laneGroups maps every name of items to its lane group: names whose
// operations in items share a key (written or skipped) are in one group.
//
// A name's operation skipped in favour of another name's newer operation on
// the same key is applied only when that newer write is made; if the two
// names wrote in parallel, a reader could see a later write of the first
// name before the key shows anything at least as new as its skipped one. In
// one lane, writes are made in token order, so that cannot happen.
func laneGroups(items []pending) map[string]string {
	parent := make(map[string]string)
	var find func(string) string
	find = func(n string) string {
		p, ok := parent[n]
		if !ok || p == n {
			parent[n] = n
			return n
		}
		root := find(p)
		parent[n] = root
		return root
	}
	owner := make(map[string]string) // key -> a name that touched it
	for _, it := range items {
		if it.batch == nil {
			continue
		}
		name := it.batch.Name
		find(name)
		for _, o := range it.batch.Ops {
			other, ok := owner[o.Key]
			if !ok {
				owner[o.Key] = name
				continue
			}
			if a, b := find(name), find(other); a != b {
				parent[a] = b
			}
		}
	}
	groups := make(map[string]string, len(parent))
	for n := range parent {
		groups[n] = find(n)
	}
	return groups
}
