package bench

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; 100 on
// every Linux architecture Go supports.
const clkTck = 100

// procSample is one reading of a process: CPU time used so far and RSS.
type procSample struct {
	cpuNanos int64
	rss      int64 // bytes
}

// readProc reads /proc/<pid>/stat (utime + stime) and /proc/<pid>/status
// (VmRSS).
func readProc(pid int) (procSample, error) {
	var s procSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	s.cpuNanos = (ut + st) * (1e9 / clkTck)
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(v)
			if len(f) > 0 {
				kb, err := strconv.ParseInt(string(f[0]), 10, 64)
				if err == nil {
					s.rss = kb * 1024
				}
			}
		}
	}
	return s, nil
}

// readProcs sums readProc over pids. ok is false when a pid could not be read.
func readProcs(pids []int) (procSample, bool) {
	var total procSample
	ok := len(pids) > 0
	for _, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			ok = false
			continue
		}
		total.cpuNanos += s.cpuNanos
		total.rss += s.rss
	}
	return total, ok
}

// selfCPU is the CPU time (user + system) this process has used.
func selfCPU() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// usableCPUs is how many CPUs this process may run on at once: the smaller
// of GOMAXPROCS and its affinity mask (taskset).
func usableCPUs() int {
	n := runtime.GOMAXPROCS(0)
	if c := affinityCPUs(); c > 0 && c < n {
		n = c
	}
	return n
}

// procsCPUPrecise is the CPU time pids have used, in nanoseconds, summed over
// their threads' /proc/<pid>/task/<tid>/schedstat (time on a CPU, counted in
// nanoseconds): utime and stime in /proc/<pid>/stat move in 10 ms ticks,
// too coarse for one fan-out of a few tens of milliseconds. Threads that
// exited are missed (Go rarely ends its threads). Without schedstat it falls
// back to /proc/<pid>/stat. ok is false when a pid could not be read.
func procsCPUPrecise(pids []int) (nanos int64, ok bool) {
	ok = len(pids) > 0
	for _, pid := range pids {
		n, err := taskCPU(pid)
		if err != nil {
			s, err := readProc(pid)
			if err != nil {
				ok = false
				continue
			}
			n = s.cpuNanos
		}
		nanos += n
	}
	return nanos, ok
}

// taskCPU sums the first field (ns on a CPU) of every thread's schedstat.
func taskCPU(pid int) (int64, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	read := 0
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread ended
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %q", dir, e.Name(), b)
		}
		total += v
		read++
	}
	if read == 0 {
		return 0, fmt.Errorf("%s: no schedstat", dir)
	}
	return total, nil
}
