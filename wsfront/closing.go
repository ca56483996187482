package wsfront

import (
	"io"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/netpoll"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsframe"
)

// The close handshake of RFC 6455 §7, as far as the server's part of it goes.

const (
	// lingerTime and lingerBytes bound what a server-initiated error close reads and discards
	// from the peer before it closes the connection.
	lingerTime  = 2 * time.Second
	lingerBytes = 16 << 20
)

// echoClose answers a client's close frame with its own code and reason, as
// socketcluster-server (ws) does; gorilla's default answer drops the reason.
func (s *Socket) echoClose(code int, text string) error {
	msg := []byte{}
	if code != websocket.CloseNoStatusReceived {
		msg = wsframe.ClosePayload(code, text)
	}
	err := s.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	if err == websocket.ErrCloseSent {
		return nil
	}
	return err
}

// protocolClose ends the connection for a peer that broke the protocol (1007 invalid UTF-8,
// 1002, 1009): the close frame, then lingerClose so the peer can read it.
func (s *Socket) protocolClose(code int, reason string) {
	s.mu.Lock()
	s.closing = true
	if s.closeCode == 0 {
		s.closeCode = code
	}
	s.mu.Unlock()
	s.srv.cfg.Metrics.ProtocolCloses.WithLabelValues(closeLabel(code)).Inc()
	_ = s.ws.WriteControl(websocket.CloseMessage, wsframe.ClosePayload(code, reason), time.Now().Add(time.Second))
	s.lingerClose()
}

// lingerClose is the end of an error close this side started: no more writes (FIN after the
// close frame), then what the peer still sends is read and discarded until it closes, for at
// most lingerTime and lingerBytes. Closing with unread bytes in the receive buffer makes the
// kernel answer with a reset, which can destroy the close frame before the peer reads it: a
// client whose 1 MiB frame was refused got a reset instead of 1009 in 2 of 3 tries.
func (s *Socket) lingerClose() {
	nc := s.nc
	if pc, ok := nc.(*netpoll.PrefetchConn); ok {
		nc = pc.Conn
	}
	if tc, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	_ = s.nc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, s.nc, lingerBytes)
}

func closeLabel(code int) string {
	switch code {
	case scproto.CloseProtocolError:
		return "protocol_error"
	case scproto.CloseInvalidPayload:
		return "invalid_utf8"
	case scproto.CloseMessageTooBig:
		return "too_big"
	}
	return "other"
}
