package tokenseq_test

import (
	"sync"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Ids made by one goroutine sort in the order they were made, ids made at
// once by many goroutines never repeat, and every id is a valid key segment.
func TestNewBatchIDsSortInOrderAndNeverRepeat(t *testing.T) {
	const goroutines, perGoroutine = 8, 5000
	made := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range made {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perGoroutine {
				made[g] = append(made[g], tokenseq.NewBatchID())
			}
		}()
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*perGoroutine)
	for _, ids := range made {
		for i, id := range ids {
			if len(id) != 32 {
				t.Fatalf("id %q: %d characters, want 32", id, len(id))
			}
			if err := keyspace.ValidateName(id); err != nil {
				t.Fatalf("id %q: %v", id, err)
			}
			if seen[id] {
				t.Fatalf("id %q made twice", id)
			}
			seen[id] = true
			if i > 0 && ids[i-1] >= id {
				t.Fatalf("id %q made after %q sorts before it", id, ids[i-1])
			}
		}
	}
}
