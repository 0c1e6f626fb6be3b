package memfence_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// BenchmarkFencedSet measures fenced writes of a 100-byte value from one
// goroutine: one at a time, on a key that exists (gets, then cas) and on a
// key that is absent (gets, a miss, then add); 64 existing keys as the
// applier writes a step of them (one multi-key gets, then one pipeline of
// cas); next to a plain memcached set, one round trip, on the same server.
//
//	go test -run '^$' -bench FencedSet ./pkg/memfence/
func BenchmarkFencedSet(b *testing.B) {
	m := testenv.StartMemcached(b)
	mc := memcache.New(m.Addr)
	w := newWriter(b, m.Addr)
	value := bytes.Repeat([]byte("v"), 100)
	b.Run("existing-key", func(b *testing.B) {
		if err := w.Set(b.Context(), "existing", value, 0, 1); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := w.Set(b.Context(), "existing", value, 0, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("absent-key", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if err := w.Set(b.Context(), "absent-"+strconv.Itoa(i), value, 0, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("pipelined-64-keys", func(b *testing.B) {
		keys := make([]string, 64)
		writes := make([]memfence.Write, len(keys))
		for i := range keys {
			keys[i] = "pipelined-" + strconv.Itoa(i)
			writes[i] = memfence.Write{Key: keys[i], Value: value}
		}
		for b.Loop() {
			snap, err := w.Read(b.Context(), keys)
			if err != nil {
				b.Fatal(err)
			}
			for _, err := range w.WriteAll(b.Context(), snap, 1, writes) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N*len(keys))/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("plain-set", func(b *testing.B) {
		for b.Loop() {
			if err := mc.Set(&memcache.Item{Key: "plain", Value: value}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
}
