package workload

import (
	"errors"
	"math/rand"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/integration/checker"
)

// reader gets random keys from memcached and records what it saw, until
// Stop.
func (w *Workload) reader(name string, rng *rand.Rand) {
	defer w.wg.Done()
	mc := w.memcachedClient(500 * time.Millisecond)
	defer mc.Close()
	for !w.stopped() {
		key := w.cfg.Keys[rng.Intn(len(w.cfg.Keys))]
		if readKey(w.rec, mc, name, key) {
			w.reads.Add(1)
			w.sleep(w.cfg.ReadPause)
		} else {
			w.sleep(20 * time.Millisecond) // memcached is down
		}
	}
}

// readKey gets key and records what it saw; it reports false (and records
// nothing) when memcached could not be read.
func readKey(rec *Recorder, mc *memcache.Client, reader, key string) bool {
	start := rec.Now()
	it, err := mc.Get(key)
	end := rec.Now()
	switch {
	case errors.Is(err, memcache.ErrCacheMiss):
		rec.Read(checker.Read{Reader: reader, Key: key, Start: start, End: end})
	case err != nil:
		return false
	default:
		rec.Read(checker.Read{Reader: reader, Key: key, Start: start, End: end, Found: true, Value: string(it.Value), Term: it.Flags})
	}
	return true
}
