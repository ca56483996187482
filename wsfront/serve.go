package wsfront

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Serve accepts client connections on ln and serves WebSocket upgrades on them until ln is
// closed (then it returns net.ErrClosed).
//
// It stands in for net/http's server on the client listener. That server allocates 8 KiB
// of buffers per connection that a hijacked connection never gives back, and keeps a
// goroutine and a connection object per request; during a connection storm that garbage
// doubles the heap an idle connection leaves behind. Here the request is read with
// http.ReadRequest through pooled buffers that go back to the pool once the upgrade is
// done, and the accepting goroutine becomes the connection's first reader. Requests that
// are not upgrades get their answer (ServeHTTP's) and the connection is closed. With a
// node-wide handshake rate, a connection is accepted only in its turn (acceptTurn).
func (s *Server) Serve(ln net.Listener) error {
	var backoff time.Duration
	for {
		if s.hsGate != nil {
			s.acceptTurn()
		}
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			if s.hsGate != nil {
				s.hsGate.Return(1) // the turn taken for a connection that did not come
			}
			// Out of descriptors and the like: wait a little rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.workers.run(func() { s.serveConn(c) })
	}
}

// maxRequestBytes bounds the upgrade request (request line and headers).
const maxRequestBytes = 64 << 10

// upgradeBufs are the pooled buffers one upgrade request is read and answered with.
type upgradeBufs struct {
	lr io.LimitedReader
	br *bufio.Reader
	bw *bufio.Writer
}

var upgradeBufPool = sync.Pool{New: func() any {
	u := &upgradeBufs{}
	u.br = bufio.NewReaderSize(&u.lr, 4096)
	u.bw = bufio.NewWriterSize(io.Discard, 512)
	return u
}}

// serveConn reads the upgrade request of c and serves it. With a node-wide handshake rate, c
// was accepted in its turn (acceptTurn), which it gives back unless it becomes a socket.
func (s *Server) serveConn(c net.Conn) {
	inTurn := s.hsGate != nil
	upgraded := false
	if inTurn {
		defer func() {
			if !upgraded {
				// A client that left, a stranger's bytes, a refused request or one that is
				// not an upgrade: the turn goes to the next connection.
				s.hsGate.Return(1)
			}
		}()
	}
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	_ = c.SetDeadline(deadline)
	var tlsState *tls.ConnectionState
	if tc, ok := c.(*tls.Conn); ok {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return
		}
		st := tc.ConnectionState()
		tlsState = &st
	}
	u := upgradeBufPool.Get().(*upgradeBufs)
	u.lr = io.LimitedReader{R: c, N: maxRequestBytes}
	u.br.Reset(&u.lr)
	u.bw.Reset(c)
	defer func() {
		u.lr.R = nil
		u.br.Reset(&u.lr)
		u.bw.Reset(io.Discard)
		upgradeBufPool.Put(u)
	}()
	req, err := http.ReadRequest(u.br)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
		_ = c.Close()
		return
	}
	req.RemoteAddr = c.RemoteAddr().String()
	req.TLS = tlsState
	w := &connWriter{c: c, u: u, header: http.Header{}, inTurn: inTurn}
	s.ServeHTTP(w, req)
	if w.hijacked {
		upgraded = true
		return // the socket owns the connection; gorilla cleared the deadlines
	}
	w.finish()
	_ = c.Close()
}

// connWriter is the http.ResponseWriter of one upgrade request.
type connWriter struct {
	c        net.Conn
	u        *upgradeBufs
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
	inTurn   bool // accepted in its turn of the handshake rate (Server.acceptTurn)
}

func (w *connWriter) Header() http.Header { return w.header }

func (w *connWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *connWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

func (w *connWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	return w.c, bufio.NewReadWriter(w.u.br, w.u.bw), nil
}

// finish writes a response that was not an upgrade, and the connection then closes.
func (w *connWriter) finish() {
	w.WriteHeader(http.StatusOK)
	bw := w.u.bw
	_, _ = bw.WriteString("HTTP/1.1 " + strconv.Itoa(w.status) + " " + http.StatusText(w.status) + "\r\n")
	w.header.Set("Connection", "close")
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	_ = w.header.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_, _ = bw.Write(w.body.Bytes())
	_ = bw.Flush()
}
