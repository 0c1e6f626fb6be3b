// Command checkhistory checks a history saved by the fault suite again and
// prints the report: useful after a change to the checker, or to read a
// failure at leisure.
//
//	go run ./integration/cmd/checkhistory [-max N] /tmp/faults-history-123/random.json
//
// It exits 1 when the history has violations.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/coordinator-dev/coordinator/integration/checker"
)

func main() {
	max := flag.Int("max", 20, "violations to print per kind (0: all)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: checkhistory [-max N] HISTORY.json")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	b, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var saved struct {
		History *checker.History `json:"history"`
	}
	if err := json.Unmarshal(b, &saved); err != nil || saved.History == nil {
		fmt.Fprintf(os.Stderr, "%s is not a saved history: %v\n", flag.Arg(0), err)
		os.Exit(1)
	}
	rep := checker.Check(saved.History)
	fmt.Printf("%s: %s\n", saved.History.Scenario, rep.Summary())
	fmt.Print(rep.Describe(*max))
	if !rep.OK() {
		os.Exit(1)
	}
}
