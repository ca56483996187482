//go:build !linux

package wsfront

import (
	"errors"
	"net"
)

// Parking idle connections needs epoll; elsewhere every connection keeps its reader
// goroutine.
type poller struct{}

type pollState struct{ rc any }

func newPoller() (*poller, error)     { return nil, errors.New("connection parking needs Linux") }
func newPollState(net.Conn) pollState { return pollState{} }
func (*poller) arm(*Socket) bool      { return false }
func (*poller) forget(*Socket)        {}
func (*poller) close()                {}

func (*pollState) tryRead([]byte) (int, bool, error)  { return 0, false, nil }
func (*pollState) read([]byte) (int, bool, error)     { return 0, false, nil }
func (*pollState) write([]byte) (bool, error)         { return false, nil }
func (*pollState) tryWrite([]byte) (int, bool, error) { return 0, false, nil }
func (*pollState) canTry() bool                       { return false }
