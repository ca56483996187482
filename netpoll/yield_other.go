//go:build !linux

package netpoll

import "runtime"

// Yield lets other goroutines run (on Linux, also those the network has made ready since the
// scheduler last looked).
func Yield() { runtime.Gosched() }
