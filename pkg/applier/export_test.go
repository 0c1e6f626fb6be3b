package applier

// HeldByStandby returns the batches s holds.
func HeldByStandby(s *Standby) int { return int(s.held.Load()) }

// StandbyWatchesOpened returns how many times s opened its watch.
func StandbyWatchesOpened(s *Standby) int { return int(s.opened.Load()) }

// StandbyBacklogCounts returns how many times s counted the pending
// batches while it was behind.
func StandbyBacklogCounts(s *Standby) int { return int(s.counts.Load()) }
