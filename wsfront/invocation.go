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
	// refused: Async was called with MaxAsyncInvokes already running on this connection; the
	// invoke is answered with an error and f never runs.
	refused bool
}

// AfterReply runs f once the reply has been queued, e.g. to close the socket or kick it
// from a channel after telling the client "ok".
func (inv *Invocation) AfterReply(f func()) { inv.after = append(inv.after, f) }

// Async answers the invoke with f's result, computed on a new goroutine; the handler's own
// return value is then ignored. Use it for anything that waits on the client (Socket.Invoke)
// or on slow I/O, so the connection keeps reading meanwhile. At most Config.MaxAsyncInvokes
// run at once per connection: past it f does not run and the client gets
// TooManyPendingInvokesError, so a client cannot grow the process by invoking faster than the
// answers come.
func (inv *Invocation) Async(f func() (any, error)) {
	if inv.async {
		return // once per invocation
	}
	inv.async = true
	s := inv.Socket
	if s.asyncs.Add(1) > int32(s.srv.cfg.MaxAsyncInvokes) {
		s.asyncs.Add(-1)
		inv.refused = true
		return
	}
	inv.handled = make(chan struct{})
	p := *inv.p
	go func() {
		defer s.asyncs.Add(-1)
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
