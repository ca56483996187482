//go:build !linux

package bench

// bindAddressNoPort: only Linux has IP_BIND_ADDRESS_NO_PORT; elsewhere a source address
// serves fewer connections (ports are chosen at bind time), which development runs do not need.
func bindAddressNoPort(uintptr) error { return nil }

// affinityCPUs: no affinity mask to read outside Linux.
func affinityCPUs() int { return 0 }
