package faults

import (
	"fmt"
	"sync"

	"github.com/coordinator-dev/coordinator/integration/checker"
)

// suiteReadBacks adds up the leaders' read-back judgements of every
// scenario the run checked, for one consistency figure over the suite.
var suiteReadBacks readBackTotals

type readBackTotals struct {
	mu        sync.Mutex
	scenarios int
	sum       checker.ReadBackStats
}

func (r *readBackTotals) add(s checker.ReadBackStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scenarios++
	r.sum.Judged += s.Judged
	r.sum.OK += s.OK
	r.sum.Missing += s.Missing
	r.sum.Stale += s.Stale
	r.sum.InWindow += s.InWindow
	r.sum.Misplaced += s.Misplaced
	r.sum.Bound += s.Bound
}

// print prints the suite's figure, once the scenarios ran.
func (r *readBackTotals) print() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scenarios == 0 {
		return
	}
	s := r.sum
	fmt.Printf("READBACK suite: %d scenarios, %d read-backs judged: ok=%d missing=%d stale=%d (delete window %d) misplaced=%d; "+
		"outside the delete window %s\n", r.scenarios, s.Judged, s.OK, s.Missing, s.Stale, s.InWindow, s.Misplaced, s.Nines())
}
