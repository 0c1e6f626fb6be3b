package memfence_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// BenchmarkFencedSet measures one fenced write of a 100-byte value from one
// goroutine, as the applier makes them: on a key that exists (gets, then
// cas) and on a key that is absent (gets, a miss, then add); next to a plain
// memcached set, one round trip, on the same server.
//
//	go test -run '^$' -bench FencedSet ./pkg/memfence/
func BenchmarkFencedSet(b *testing.B) {
	m := testenv.StartMemcached(b)
	mc := memcache.New(m.Addr)
	w := newWriter(b, m.Addr)
	value := bytes.Repeat([]byte("v"), 100)
	b.Run("existing-key", func(b *testing.B) {
		if err := w.Set("existing", value, 0, 1); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := w.Set("existing", value, 0, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("absent-key", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if err := w.Set("absent-"+strconv.Itoa(i), value, 0, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
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
