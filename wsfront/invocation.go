package wsfront

import (
	"encoding/json"

	"github.com/sockmesh/sockmesh/scproto"
)

// Invocation is one client invoke being handled.
type Invocation struct {
	Socket *Socket
	Event  string
	Data   json.RawMessage
	after  []func()
	async  bool
	// handled is closed when the handler has returned (Async only): the answer and the
	// AfterReply functions wait for it, so AfterReply may be called after Async.
	handled chan struct{}
	p       *scproto.Packet
}

// AfterReply runs f once the reply has been queued, e.g. to close the socket or kick it
// from a channel after telling the client "ok".
func (inv *Invocation) AfterReply(f func()) { inv.after = append(inv.after, f) }

// Async answers the invoke with f's result, computed on a new goroutine; the handler's own
// return value is then ignored. Use it for anything that waits on the client (Socket.Invoke)
// or on slow I/O, so the connection keeps reading meanwhile.
func (inv *Invocation) Async(f func() (any, error)) {
	if inv.async {
		return // once per invocation
	}
	inv.async = true
	inv.handled = make(chan struct{})
	p := *inv.p
	s := inv.Socket
	go func() {
		defer func() {
			if r := recover(); r != nil {
				s.recoverPanic(r) // the reader notices the closed connection
			}
		}()
		data, err := f()
		<-inv.handled
		if fr := responseFrame(&p, data, err, "invoke"); fr != nil {
			s.enqueue(fr) // not the reader: written by the writer
		}
		for _, g := range inv.after {
			g()
		}
	}()
}
