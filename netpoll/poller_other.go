//go:build !linux

package netpoll

import (
	"errors"
	"net"
)

// Parking idle connections needs epoll; elsewhere every connection keeps its reader
// goroutine, and reads and writes go through the net.Conn (every method answers ok false).
type Poller struct{}

// Conn has no descriptor to offer here.
type Conn struct{}

func NewPoller() (*Poller, error)      { return nil, errors.New("connection parking needs Linux") }
func NewConn(net.Conn) Conn            { return Conn{} }
func (*Poller) Arm(*Conn, func()) bool { return false }
func (*Poller) Forget(*Conn)           {}
func (*Poller) Close()                 {}

func (*Conn) Raw() bool                          { return false }
func (*Conn) TryRead([]byte) (int, bool, error)  { return 0, false, nil }
func (*Conn) Read([]byte) (int, bool, error)     { return 0, false, nil }
func (*Conn) Write([]byte) (bool, error)         { return false, nil }
func (*Conn) TryWrite([]byte) (int, bool, error) { return 0, false, nil }
func (*Conn) CanTry() bool                       { return false }
