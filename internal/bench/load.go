package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// loadResult is the outcome of one closed-loop measurement.
type loadResult struct {
	ops      int64
	errors   int64
	firstErr error
	elapsed  time.Duration
	lat      []time.Duration // one per successful operation, unsorted
}

// opsPerSec is the throughput of successful operations.
func (r loadResult) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// closedLoop runs op in conc workers, each starting its next operation as
// soon as the previous one returned, until d has passed; operations in
// flight at that moment are completed and counted. Every worker records its
// latencies in a slice of its own. ctx ending stops the workers early.
func closedLoop(ctx context.Context, conc int, d time.Duration, op func(ctx context.Context, w, i int) error) loadResult {
	type workerResult struct {
		lat      []time.Duration
		errors   int64
		firstErr error
	}
	results := make([]workerResult, conc)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[w]
			r.lat = make([]time.Duration, 0, 1024)
			for i := 0; ; i++ {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				if err := op(ctx, w, i); err != nil {
					if r.errors == 0 {
						r.firstErr = err
					}
					r.errors++
					continue
				}
				r.lat = append(r.lat, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	res := loadResult{elapsed: time.Since(start)}
	for _, r := range results {
		res.ops += int64(len(r.lat))
		res.errors += r.errors
		if res.firstErr == nil {
			res.firstErr = r.firstErr
		}
		res.lat = append(res.lat, r.lat...)
	}
	return res
}

// percentile returns the p-th percentile (0 < p <= 1) of lat by the
// nearest-rank method; lat must be sorted. It is zero for no samples.
func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(lat)) - 1e-9))
	rank = max(1, min(rank, len(lat)))
	return lat[rank-1]
}

// summary is the percentiles of a set of latencies.
type summary struct {
	n             int
	p50, p99, max time.Duration
}

func summarize(lat []time.Duration) summary {
	s := slices.Clone(lat)
	slices.Sort(s)
	if len(s) == 0 {
		return summary{}
	}
	return summary{n: len(s), p50: percentile(s, 0.50), p99: percentile(s, 0.99), max: s[len(s)-1]}
}

// measurement turns a loadResult into a Measurement.
func measurement(what string, conc int, r loadResult) Measurement {
	s := summarize(r.lat)
	m := Measurement{
		What: what, Concurrency: conc, Ops: r.ops, Errors: r.errors, Seconds: r.elapsed.Seconds(),
		OpsPerSec: r.opsPerSec(), P50Ms: ms(s.p50), P99Ms: ms(s.p99), MaxMs: ms(s.max),
	}
	if r.firstErr != nil {
		m.Note = "first error: " + r.firstErr.Error()
	}
	return m
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
