package bench

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUUse is the CPU time (user and system) a measurement of the
// multi-process scenario cost the whole system, over its measurement
// window: from the common start to the end of the last operation, start-up
// (connecting, registering) and teardown (unregistering) left out.
type CPUUse struct {
	// PerOpMicros is Callers, Bench and Etcd added up, in microseconds per
	// successful operation.
	PerOpMicros float64 `json:"per_op_us"`
	// CallersSec is the caller processes' CPU over their windows, each
	// measured by the process itself (getrusage(RUSAGE_SELF) at its start
	// and after its last operation).
	CallersSec float64 `json:"callers_sec"`
	// BenchSec is the bench process's CPU over the window
	// (getrusage(RUSAGE_SELF) deltas): the node's API server, the embedded
	// etcd when the run started one, and the bench's own bookkeeping.
	BenchSec float64 `json:"bench_sec"`
	// EtcdSec is the CPU of the process serving etcd given with
	// Config.EtcdPID, over the window (/proc/PID/stat deltas); zero when
	// etcd is embedded in the bench process or no EtcdPID was given.
	EtcdSec float64 `json:"etcd_sec,omitempty"`
	// CallersLifeSec is the caller processes' CPU over their whole lives,
	// start-up and teardown included (their rusage once they exited); not
	// part of PerOpMicros.
	CallersLifeSec float64 `json:"callers_life_sec"`
}

// total is the CPU time counted per operation.
func (u CPUUse) total() float64 { return u.CallersSec + u.BenchSec + u.EtcdSec }

// perOp fills in PerOpMicros for ops operations.
func (u *CPUUse) perOp(ops int64) {
	if ops > 0 {
		u.PerOpMicros = u.total() / float64(ops) * 1e6
	}
}

// describe is the breakdown for a measurement's note.
func (u CPUUse) describe() string {
	s := fmt.Sprintf("CPU %.0f µs/op: callers %.2fs, bench process %.2fs", u.PerOpMicros, u.CallersSec, u.BenchSec)
	if u.EtcdSec > 0 {
		s += fmt.Sprintf(", etcd process %.2fs", u.EtcdSec)
	}
	return s + fmt.Sprintf(" (callers' whole lives %.2fs)", u.CallersLifeSec)
}

// selfCPU is the CPU time this process has used, user and system, all of
// its threads.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture's user ABI.
const clockTicks = 100

// pidCPU is the CPU time process pid has used, user and system, from
// /proc/PID/stat (10 ms resolution).
func pidCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and
// may hold spaces and parentheses itself, so the fields are counted from
// the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bench: /proc stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, errors.New("bench: /proc stat: too few fields")
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
