package applier

// HeldByStandby returns the batches s holds.
func HeldByStandby(s *Standby) int { return int(s.held.Load()) }
