package inspect

// SetPendingNamesRead makes pendingNames read n keys at a time until the
// returned function restores it.
func SetPendingNamesRead(n int64) (restore func()) {
	old := pendingNamesRead
	pendingNamesRead = n
	return func() { pendingNamesRead = old }
}
