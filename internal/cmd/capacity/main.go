// Command capacity prints the capacity model of docs/scale.md: the measured
// figures of BENCHMARKS.md beside the model's predictions, then where one
// deployment tops out on the measured machine and on the hardware given.
//
//	go run ./internal/cmd/capacity [-fsync 1ms] [-client-rtt 500us] [-peer-rtt 500us] [-memcached-rtt 200us] [-cpu-speed 2] [-ttl 10s]
//
// Without flags it prints three profiles: the measured machine, a
// three-member etcd on cloud block storage, and one on NVMe with
// power-loss protection.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/coordinator-dev/coordinator/internal/capacity"
)

// profile is a named Hardware.
type profile struct {
	name string
	hw   capacity.Hardware
}

// Profiles printed without flags (docs/scale.md explains the numbers).
var profiles = []profile{
	{"measured: 2 vCPUs, one member, virtio disk", capacity.MeasuredHardware},
	{"3 members, cloud SSD (fsync 1 ms), one zone", capacity.Hardware{
		Fsync: time.Millisecond, ClientRTT: 300 * time.Microsecond, PeerRTT: 300 * time.Microsecond,
		MemcachedRTT: 200 * time.Microsecond, CPUSpeed: 2}},
	{"3 members, cloud SSD, members across zones", capacity.Hardware{
		Fsync: time.Millisecond, ClientRTT: time.Millisecond, PeerRTT: 1500 * time.Microsecond,
		MemcachedRTT: 200 * time.Microsecond, CPUSpeed: 2}},
	{"3 members, NVMe with power-loss protection", capacity.Hardware{
		Fsync: 50 * time.Microsecond, ClientRTT: 100 * time.Microsecond, PeerRTT: 100 * time.Microsecond,
		MemcachedRTT: 100 * time.Microsecond, CPUSpeed: 4}},
}

func main() {
	fsync := flag.Duration("fsync", 0, "etcd's WAL fdatasync latency (with -client-rtt etc.: print this hardware only)")
	clientRTT := flag.Duration("client-rtt", 0, "round trip from a node to etcd")
	peerRTT := flag.Duration("peer-rtt", 0, "round trip between etcd's members (0: one member)")
	mcRTT := flag.Duration("memcached-rtt", 0, "round trip from the leader to memcached")
	speed := flag.Float64("cpu-speed", 1, "CPU for etcd and the leader, relative to the measured machine")
	ttl := flag.Duration("ttl", capacity.FleetTTL, "the callers' lease TTL, for keep-alives")
	flag.Parse()
	ps := profiles
	if *fsync > 0 {
		ps = []profile{{"given", capacity.Hardware{
			Fsync: *fsync, ClientRTT: *clientRTT, PeerRTT: *peerRTT, MemcachedRTT: *mcRTT, CPUSpeed: *speed,
		}}}
	}
	if err := run(os.Stdout, ps, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "capacity:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, ps []profile, ttl time.Duration) error {
	m := capacity.Fit(capacity.Measured)
	if err := capacity.Print(w, m); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "HARDWARE\tROUND\tONE SUBMITTER\tMANY SUBMITTERS\tONE LEADER\tEND TO END\tKEEP-ALIVES PER 1,000\t\n")
	for _, p := range ps {
		s := m.Scale(capacity.MeasuredHardware, p.hw)
		c := s.Ceiling(ttl)
		fmt.Fprintf(tw, "%s\t%s\t%.0f/s (%d callers)\t%.0f/s\t%.0f/s\t%.0f/s\t%.0f/s (TTL %s)\t\n", p.name,
			s.RoundBase.Round(time.Microsecond), c.Submit, c.SubmitCallers, c.ManySubmitters, c.Apply, c.EndToEnd,
			c.KeepAlivesPer1000, c.KeepAliveTTL)
	}
	return tw.Flush()
}
