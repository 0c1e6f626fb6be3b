package faults

import (
	"strings"

	"github.com/coordinator-dev/coordinator/integration/harness"
)

// takeovers lists, from the nodes' logs, every "became leader" and the
// batches each new leader found pending and replayed.
func (s *scenario) takeovers() string {
	var out []string
	for _, n := range s.c.Nodes {
		for _, line := range harness.Lines(n.Output()) {
			switch {
			case strings.Contains(line, `msg="became leader"`):
				out = append(out, n.ID+" "+field(line, "term="))
			case strings.Contains(line, `msg="replaying pending batches"`):
				out = append(out, n.ID+" replayed "+field(line, "batches="))
			case strings.Contains(line, rangeReadMsg):
				out = append(out, n.ID+" range-read "+field(line, "batches="))
			}
		}
	}
	return strings.Join(out, ", ")
}

// rangeReadMsg is what a leader logs when etcd's history was compacted past
// the watermark and it reads the pending batches with a range read.
const rangeReadMsg = `msg="etcd history compacted past the watermark; read pending batches with a range read"`

// rangeReads counts the range reads of pending batches in the nodes' logs.
func (s *scenario) rangeReads() int {
	n := 0
	for _, nd := range s.c.Nodes {
		n += strings.Count(nd.Output(), rangeReadMsg)
	}
	return n
}

// field returns the value of key=value in a log line.
func field(line, key string) string {
	_, rest, ok := strings.Cut(line, " "+key)
	if !ok {
		return "?"
	}
	v, _, _ := strings.Cut(rest, " ")
	return key + v
}
