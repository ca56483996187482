package bench

import "golang.org/x/sys/unix"

// bindAddressNoPort sets IP_BIND_ADDRESS_NO_PORT: the kernel picks the local port at connect
// time, per destination, so one source address serves ~28k connections per server port.
func bindAddressNoPort(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
}

// affinityCPUs is the size of this process's CPU affinity mask (taskset), 0 if unknown.
func affinityCPUs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return 0
	}
	return set.Count()
}
