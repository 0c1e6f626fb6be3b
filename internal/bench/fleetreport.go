package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// fleetResults turns the phases into sr's measurements, ratios and notes.
// Each phase's active callers among its idle ones are compared with its
// own runs with none idle; ttl is the callers' lease TTL.
func fleetResults(sr *ScenarioReport, phases []fleetPhase, ttl time.Duration) {
	c := newComparison()
	for _, p := range phases {
		c.add(p.Base...)
		c.add(p.Active...)
		n := p.Plan.Idle
		base, what := fmt.Sprintf(whatFleetBase, n), fmt.Sprintf(whatFleetActive, n)
		if len(p.Base) > 0 {
			sr.Measurements = append(sr.Measurements, c.median(base))
		}
		if len(p.Active) > 0 {
			sr.Measurements = append(sr.Measurements, c.median(what))
			sr.addRatio(fmt.Sprintf(ratioFleetP99, n), fleetActiveCallers, c.ratio(what, base, p99Ms))
			sr.addRatio(fmt.Sprintf(ratioFleetOps, n), fleetActiveCallers, c.ratio(what, base, opsPerSec))
		}
		sr.Measurements = append(sr.Measurements, fleetPhaseMeasurements(p, ttl)...)
	}
}

// fleetPhaseMeasurements are the measurements of one phase besides its
// active callers': the registrations, keep-alives and memory.
func fleetPhaseMeasurements(p fleetPhase, ttl time.Duration) []Measurement {
	var out []Measurement
	n := p.Plan.Idle
	if p.Registered > 0 || p.RegErrors > 0 {
		reg := measurement(fmt.Sprintf(whatFleetRegister, n, p.Plan.API, p.Plan.Direct), 0,
			loadResult{ops: p.Registered, elapsed: p.RegElapsed, lat: p.RegLatencies})
		reg.Errors = p.errors()
		reg.Note = fmt.Sprintf("%d registrations failed, %d leases lost or registrations ended while held, "+
			"%d unregistrations failed, %.0f calls refused by the node's limits",
			p.RegErrors, p.Lost, p.UnregErrors, p.W1.Limited)
		for _, e := range []string{p.RegFirstErr, p.FirstLoss, p.FirstUnreg} {
			if e != "" {
				reg.Note += "; first: " + e
			}
		}
		out = append(out, reg)
	}
	if !p.W0.At.IsZero() && !p.W1.At.IsZero() {
		window := p.W1.At.Sub(p.W0.At).Seconds()
		ka := Measurement{What: fmt.Sprintf(whatFleetKeepAlives, n), Seconds: window, Unit: "req/s"}
		if p.W0.EtcdCounted && p.W1.EtcdCounted {
			ka.Value = perSecond(p.W0, p.W1, func(c fleetCounters) float64 { return c.EtcdKeepAlives })
			ka.Ops = int64(p.W1.EtcdKeepAlives - p.W0.EtcdKeepAlives)
			ka.Note = fmt.Sprintf("etcd renewed %.0f leases/s", perSecond(p.W0, p.W1, func(c fleetCounters) float64 { return c.EtcdRenewed }))
		} else {
			ka.Note = "etcd's metrics not readable (not plain http): not counted there"
		}
		direct := n - p.Plan.API + 1 // the node's own lease too
		ka.Note = joinNote(ka.Note, fmt.Sprintf("%.0f/s expected at one request per lease each TTL/3 + 0.25 s for the %d kept by etcd's client "+
			"(the sessions' and the node's own), each TTL/3 for the %d the node keeps for its API callers; "+
			"the node sent %.0f keep-alive messages/s to its API callers (one per renewal on a KeepAlive stream, the renewals of many on a KeepAliveMany stream); CPU over the window: node %.0f%% of a core",
			keepAlivesExpected(direct, p.Plan.API, ttl), direct, p.Plan.API,
			perSecond(p.W0, p.W1, func(c fleetCounters) float64 { return c.NodeKeepAlives }),
			100*(p.W1.NodeCPU-p.W0.NodeCPU).Seconds()/window))
		if p.W1.EtcdCPU > 0 {
			ka.Note += fmt.Sprintf(", etcd %.0f%%", 100*(p.W1.EtcdCPU-p.W0.EtcdCPU).Seconds()/window)
		}
		ka.Note += fmt.Sprintf(", the idle callers' processes %.0f%%", 100*(p.W1.HoldersCPU-p.W0.HoldersCPU).Seconds()/window)
		out = append(out, ka)
	}
	if p.After.NodeRSS == 0 || p.Before.NodeRSS == 0 {
		return out
	}
	if p.Plan.API > 0 {
		api := float64(p.Plan.API)
		rss := Measurement{What: fmt.Sprintf(whatFleetNodeRSS, n), Ops: int64(p.Plan.API), Unit: "KiB",
			Value: float64(p.After.NodeRSS-p.Before.NodeRSS) / api / 1024,
			Note: fmt.Sprintf("node VmRSS %.1f MiB before registrations, %.1f MiB holding %d API callers; live heap %.1f → %.1f MiB, %.1f KiB per caller",
				float64(p.Before.NodeRSS)/mib, float64(p.After.NodeRSS)/mib, p.Plan.API,
				p.Before.NodeLive/mib, p.After.NodeLive/mib, (p.After.NodeLive-p.Before.NodeLive)/api/1024)}
		gor := Measurement{What: fmt.Sprintf(whatFleetNodeGo, n), Ops: int64(p.Plan.API), Unit: "goroutines",
			Value: (p.After.NodeGoroutines - p.Before.NodeGoroutines) / api,
			Note:  fmt.Sprintf("go_goroutines %.0f → %.0f", p.Before.NodeGoroutines, p.After.NodeGoroutines)}
		out = append(out, rss, gor)
	}
	if n > 0 {
		if p.After.EtcdRSS > 0 && p.Before.EtcdRSS > 0 {
			out = append(out, Measurement{What: fmt.Sprintf(whatFleetEtcdRSS, n), Ops: int64(n), Unit: "KiB",
				Value: float64(p.After.EtcdRSS-p.Before.EtcdRSS) / float64(n) / 1024,
				Note: fmt.Sprintf("etcd VmRSS %.1f → %.1f MiB; live heap %.1f → %.1f MiB, %.1f KiB per registration",
					float64(p.Before.EtcdRSS)/mib, float64(p.After.EtcdRSS)/mib, p.Before.EtcdLive/mib, p.After.EtcdLive/mib,
					(p.After.EtcdLive-p.Before.EtcdLive)/float64(n)/1024)})
		}
		out = append(out, Measurement{What: fmt.Sprintf(whatFleetEtcdDB, n), Ops: int64(n), Unit: "B",
			Value: float64(p.After.DBInUse-p.Before.DBInUse) / float64(n),
			Note: fmt.Sprintf("in use %.2f → %.2f MiB, file %.2f → %.2f MiB", float64(p.Before.DBInUse)/mib,
				float64(p.After.DBInUse)/mib, float64(p.Before.DBSize)/mib, float64(p.After.DBSize)/mib)})
	}
	return out
}

// keepAlivesExpected is the keep-alive requests per second of direct
// leases of TTL ttl kept alive by etcd's Go client, which sends one TTL/3
// after the last answer, checking every 500 ms, so about every TTL/3 +
// 0.25 s, and of viaNode leases a node keeps alive for its API callers,
// each TTL/3 after the last answer, on a timer.
func keepAlivesExpected(direct, viaNode int, ttl time.Duration) float64 {
	return float64(direct)/keepAlivePeriod(ttl).Seconds() + float64(viaNode)/(ttl/3).Seconds()
}

// keepAlivePeriod is how often etcd's Go client renews a lease of TTL ttl
// on average: TTL/3 after the last renewal, found by a check every 500 ms.
func keepAlivePeriod(ttl time.Duration) time.Duration { return ttl/3 + 250*time.Millisecond }

// idleWindow is how long keep-alives are counted: a whole number of
// renewal periods, at least two and at least d. Registrations made
// together renew together, in bursts one period apart; a window of whole
// periods counts each as often whatever its phase.
func idleWindow(d, ttl time.Duration) time.Duration {
	period := keepAlivePeriod(ttl)
	return period * time.Duration(max(2, (d+period-1)/period))
}

// fleetTargets are the fleet scenario's targets, read at its largest
// number of idle callers.
func fleetTargets(r *Report) []Target {
	s := findScenario(r, ScenarioFleet)
	if s == nil {
		return nil
	}
	var ts []Target
	var rss *Measurement
	var errs int64
	for i := range s.Measurements {
		m := &s.Measurements[i]
		errs += m.Errors
		if strings.HasPrefix(m.What, strings.SplitN(whatFleetNodeRSS, "%", 2)[0]) {
			rss = m // the phases are in ascending order: the last is the largest
		}
	}
	if rss != nil {
		ts = append(ts, Target{Name: "fleet: node memory per idle API caller", Want: "≤ 16 KiB",
			Got: fmt.Sprintf("%.1f KiB (%d API callers)", rss.Value, rss.Ops), Met: rss.Value <= 16})
	}
	var p99 *Ratio
	for i := range s.Ratios {
		if strings.HasPrefix(s.Ratios[i].Name, "active p99, ") {
			p99 = &s.Ratios[i]
		}
	}
	if p99 != nil {
		ts = append(ts, Target{Name: "fleet: active p99 with idle callers vs none", Want: "≤ 1.5×",
			Got: fmt.Sprintf("%.2f× (%s)", p99.Value, strings.TrimPrefix(p99.Name, "active p99, ")), Met: p99.Value <= 1.5})
	}
	ts = append(ts, Target{Name: "fleet: errors", Want: "0", Got: strconv.FormatInt(errs, 10), Met: errs == 0})
	return ts
}
