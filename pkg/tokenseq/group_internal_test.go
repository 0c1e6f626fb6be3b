package tokenseq

import (
	"context"
	"fmt"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// enqueue queues n more submissions on s, each of a name of its own. No
// etcd is needed: the tests below only take groups, they send none.
func enqueue(s *Submitter, n int) {
	for range n {
		i := len(s.queue)
		req := Request{Name: fmt.Sprintf("n%d", i), Incarnation: 1, ID: fmt.Sprintf("b%d", i), Ops: []ops.Op{ops.Delete("k")}}
		s.queue = append(s.queue, s.newSubmission(context.Background(), req))
	}
}

// sizes returns the size of each group.
func sizes(groups [][]*submission) []int {
	var out []int
	for _, g := range groups {
		out = append(out, len(g))
	}
	return out
}

func TestFreeSlotWaitsForAGroupAsLargeAsTheLastWhileOneIsUnderWay(t *testing.T) {
	s := newSubmitter(SubmitterConfig{Layout: keyspace.MustNew("t")})
	enqueue(s, 5)
	s.inflight, s.lastGroup = 1, 6
	if groups := s.takeGroupsLocked(); len(groups) != 0 {
		t.Fatalf("sent groups of %v while one of 6 was under way: want to wait for 6 queued", sizes(groups))
	}
	if len(s.queue) != 5 || s.inflight != 1 {
		t.Fatalf("queue %d, in flight %d after waiting: want 5 and 1", len(s.queue), s.inflight)
	}

	enqueue(s, 1)
	groups := s.takeGroupsLocked()
	if fmt.Sprint(sizes(groups)) != "[6]" || s.inflight != 2 || s.lastGroup != 6 {
		t.Fatalf("groups %v, in flight %d, last group %d: want [6], 2, 6", sizes(groups), s.inflight, s.lastGroup)
	}
}

func TestWithNothingUnderWayAnyQueueIsSent(t *testing.T) {
	s := newSubmitter(SubmitterConfig{Layout: keyspace.MustNew("t")})
	enqueue(s, 3)
	s.lastGroup = 40
	groups := s.takeGroupsLocked()
	if fmt.Sprint(sizes(groups)) != "[3]" || s.lastGroup != 3 {
		t.Fatalf("groups %v, last group %d: want [3] and 3, whatever the last group was", sizes(groups), s.lastGroup)
	}
}
