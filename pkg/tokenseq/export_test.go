package tokenseq

// HoldSlots takes every transaction slot of s, so that submissions queue up
// until release is called; release then sends what is queued.
func HoldSlots(s *Submitter) (release func()) {
	s.mu.Lock()
	n := s.cfg.MaxInFlight
	s.inflight += n
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.inflight -= n
		groups := s.takeGroupsLocked()
		s.mu.Unlock()
		s.start(groups)
	}
}

// Queued returns how many submissions wait for a transaction.
func Queued(s *Submitter) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// OnFailedTransaction makes s run f after a transaction fails at revision
// rev, before the read that settles its members.
func OnFailedTransaction(s *Submitter, f func(rev int64)) { s.failedTxn = f }

// Waiting returns how many waiters aw holds: those whose token the
// watermark it has seen does not reach.
func Waiting(aw *AppliedWatcher) int {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	return len(aw.waiters)
}
