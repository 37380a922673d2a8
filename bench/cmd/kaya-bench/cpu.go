package main

import (
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSample is a reading of the machine's CPU time counters (/proc/stat)
// and of this process's own CPU time (getrusage). The difference between two
// samples tells how much CPU something other than the benchmark used during
// a run: on a 2-vCPU machine, another process's tests can move results by
// tens of percent, and this makes such a run visible.
type cpuSample struct {
	at    time.Time
	busy  time.Duration // user+nice+system+irq+softirq over all CPUs
	steal time.Duration // time the hypervisor ran something else
	self  time.Duration // this process's user+system time
	ok    bool
}

// clockTick is USER_HZ, the unit of /proc/stat (100 on every Linux ABI Go
// supports).
const clockTick = 10 * time.Millisecond

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s
	}
	s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	line, _, _ := strings.Cut(readFile("/proc/stat"), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	tick := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * clockTick
	}
	// Fields: user nice system idle iowait irq softirq steal ...
	s.busy = tick(1) + tick(2) + tick(3) + tick(6) + tick(7)
	s.steal = tick(8)
	s.ok = true
	return s
}

// otherCPU returns, between samples a and b, the CPU used outside this
// process (other processes and kernel threads such as writeback) and the
// steal time, each in CPUs (1.0 = one CPU fully busy on average).
func otherCPU(a, b cpuSample) (other, steal float64) {
	wall := b.at.Sub(a.at).Seconds()
	if !a.ok || !b.ok || wall <= 0 {
		return -1, -1
	}
	o := (b.busy - a.busy) - (b.self - a.self)
	return max(o.Seconds(), 0) / wall, (b.steal - a.steal).Seconds() / wall
}
