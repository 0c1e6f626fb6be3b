package tokenseq

import "testing"

func TestBatchIDTimeStrictlyIncreasesWhenTheClockDoesNot(t *testing.T) {
	start := nextBatchIDTime() + 1000
	got := []int64{batchIDTimeAt(start), batchIDTimeAt(start), batchIDTimeAt(start - 500), batchIDTimeAt(start + 10)}
	want := []int64{start, start + 1, start + 2, start + 10}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("times %v, want %v", got, want)
		}
	}
}
