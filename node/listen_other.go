//go:build !linux

package node

import "syscall"

// deferAccept: TCP_DEFER_ACCEPT is Linux-only; elsewhere connections are accepted at once.
func deferAccept(int) func(network, address string, c syscall.RawConn) error { return nil }
