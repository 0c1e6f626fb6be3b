package regwatch

// BreakWatch ends w's current etcd watch as a failure would: w watches
// again, after its backoff, from the revision it stopped at. It does
// nothing before the first watch starts; a test makes sure one runs by
// receiving a Changed first.
func BreakWatch(w *Watcher) {
	w.mu.Lock()
	stop := w.stopWatch
	w.mu.Unlock()
	if stop != nil {
		stop()
	}
}
