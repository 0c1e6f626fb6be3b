package main

import (
	"fmt"
	"io"

	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// termHeadroomWarning is the number of terms left below which status warns
// on stderr that the namespace nears the highest term an item's flags hold.
const termHeadroomWarning = 1000

// warnTermHeadroom writes to w how many terms are left after term, when
// fewer than termHeadroomWarning are, and what to do about it.
func warnTermHeadroom(w io.Writer, term uint64) {
	left := memfence.TermHeadroom(term)
	if left >= termHeadroomWarning {
		return
	}
	fmt.Fprintf(w, "warning: term %d: %d terms left before %d, the highest an item's flags hold; "+
		"a leader of a later term refuses to lead: stop every node and run `coordinator topology reset-term`\n",
		term, left, memfence.MaxTerm)
}
