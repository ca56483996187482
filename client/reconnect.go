package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// supervise is the supervisor goroutine: connect, serve until the connection
// ends, back off, move to the next URL, repeat — until Close.
func (c *Client) supervise() {
	defer c.wg.Done()
	idx := 0
	failures := 0
	var delay time.Duration
	for {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
				return
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		url := c.opts.URLs[idx%len(c.opts.URLs)]
		idx++
		cn, st, err := c.connect(url)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			failures++
			delay = c.backoff(failures)
			var de *dialError
			if errors.As(err, &de) && de.retryAfter > 0 {
				// The server said when to come back (a node pacing a reconnect storm): at that
				// time or up to half as late again, so that a wave refused together does not
				// return together; a bound of its own, MaxBackoff does not cut it short.
				delay = max(delay, de.retryAfter+rand.N(de.retryAfter/2+1))
			}
			c.log.Warn("connect failed", "url", url, "err", err, "retryIn", delay)
			c.mu.Lock()
			c.lastErr = err
			fatal := isPermanent(err) && !c.everConnected()
			if fatal {
				c.fatalErr = err
			}
			c.mu.Unlock()
			if fatal {
				close(c.dialFailed) // Dial reports it and closes us
				return
			}
			continue
		}
		failures = 0
		c.serve(cn, st)
		if c.ctx.Err() != nil {
			return
		}
		code, _ := cn.closeInfo()
		switch code {
		case 4000, 4001, 1005:
			delay = 0
		default:
			delay = c.backoff(1)
		}
	}
}

// everConnected reports whether Dial already succeeded.
func (c *Client) everConnected() bool {
	select {
	case <-c.firstUp:
		return true
	default:
		return false
	}
}

// isPermanent reports a handshake rejection that asks the client not to
// retry (statusCode, or close code, 1000 or >= 4500), as socketcluster-client
// honours it. Only applied before the first successful connection.
func isPermanent(err error) bool {
	var sc int
	var e *Error
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &e):
		sc = e.StatusCode()
	case errors.As(err, &ce):
		sc = ce.Code
	}
	return sc == 1000 || sc >= 4500
}

// retryAfter reads a refused upgrade's Retry-After (seconds; an HTTP date is not used by
// servers that pace connections): only with 503 or 429, at most 5 minutes.
func retryAfter(resp *http.Response) time.Duration {
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
		return 0
	}
	const most = 5 * time.Minute
	n, err := strconv.ParseUint(strings.TrimSpace(resp.Header.Get("Retry-After")), 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || n == 0 {
		return 0
	}
	if err != nil || n > uint64(most/time.Second) { // compared before multiplying: no overflow
		return most
	}
	return time.Duration(n) * time.Second
}

// backoff returns the jittered delay after n consecutive failures:
// MinBackoff·2^(n-1), capped at MaxBackoff, uniformly jittered to [d/2, d].
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MinBackoff
	for i := 1; i < n && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.opts.MaxBackoff)
	half := d / 2
	return half + rand.N(half+1)
}

// connect dials url and completes the handshake. On success the returned
// conn is ready for its reader goroutine.
func (c *Client) connect(url string) (*conn, HandshakeStatus, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.ConnectTimeout)
	defer cancel()
	ws, resp, err := c.dialer.DialContext(ctx, url, c.opts.Header)
	if err != nil {
		de := &dialError{url: url, err: err}
		if resp != nil {
			de.err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
			de.retryAfter = retryAfter(resp)
		}
		return nil, HandshakeStatus{}, de
	}
	if c.opts.ReadLimit > 0 {
		ws.SetReadLimit(c.opts.ReadLimit)
	}
	cn := newConn(c, ws, url)
	// Close (or the connect timeout) aborts a handshake in progress.
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	deadline, _ := ctx.Deadline()
	_ = ws.SetReadDeadline(deadline)

	var (
		got    bool
		status json.RawMessage
		herr   error
	)
	cid := c.cid.Add(1)
	cn.addCall(cid, &pendingCall{event: "#handshake", fn: func(data json.RawMessage, err error) {
		got, status, herr = true, data, err
	}})
	c.mu.RLock()
	token := c.token
	c.mu.RUnlock()
	bp := getBuf()
	*bp = appendHandshake((*bp)[:0], token, cid)
	err = cn.write(*bp)
	putBuf(bp)
	for err == nil && !got {
		var frame []byte
		if frame, err = cn.readFrame(); err == nil {
			cn.handleFrame(frame) // pings may come before the answer
		}
	}
	if err != nil {
		if c.ctx.Err() != nil {
			cn.writeClose(1000, "")
		} else if isTimeout(err) || ctx.Err() != nil {
			cn.writeClose(4007, "")
			err = fmt.Errorf("handshake timed out: %w", err)
		}
		cn.finish(err)
		return nil, HandshakeStatus{}, &dialError{url: url, err: err}
	}
	if herr != nil {
		var e *Error
		code := 4003
		if errors.As(herr, &e) && e.StatusCode() != 0 {
			code = e.StatusCode()
		}
		cn.writeClose(code, "")
		cn.finish(nil)
		return nil, HandshakeStatus{}, herr
	}
	var raw struct {
		ID              string  `json:"id"`
		PingTimeout     float64 `json:"pingTimeout"`
		IsAuthenticated bool    `json:"isAuthenticated"`
		AuthError       *Error  `json:"authError"`
	}
	if len(status) > 0 {
		if err := json.Unmarshal(status, &raw); err != nil {
			cn.writeClose(4003, "")
			cn.finish(nil)
			return nil, HandshakeStatus{}, &dialError{url: url, err: fmt.Errorf("bad handshake status: %w", err)}
		}
	}
	st := HandshakeStatus{
		ID:              raw.ID,
		PingTimeout:     time.Duration(raw.PingTimeout * float64(time.Millisecond)),
		IsAuthenticated: raw.IsAuthenticated,
		AuthError:       raw.AuthError,
		URL:             url,
	}
	cn.pingTimeout = st.PingTimeout
	if st.PingTimeout > 0 {
		_ = ws.SetReadDeadline(time.Now().Add(st.PingTimeout))
	} else {
		_ = ws.SetReadDeadline(time.Time{})
	}
	return cn, st, nil
}

// serve runs an established connection: publish it, re-subscribe, wait for
// its end (or Close), then unpublish it.
func (c *Client) serve(cn *conn, st HandshakeStatus) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		cn.readLoop()
	}()

	c.mu.Lock()
	c.status = st
	c.cur.Store(cn)
	close(c.connected)
	var resub []*subscription
	for _, s := range c.sortedSubsLocked() {
		if s.sentOn != cn {
			s.sentOn = cn
			s.acked = false
			resub = append(resub, s)
		}
	}
	c.mu.Unlock()
	for _, s := range resub {
		c.sendSubscribe(cn, s)
	}
	c.log.Info("connected", "url", cn.url, "id", st.ID, "authenticated", st.IsAuthenticated)
	if !c.everConnected() {
		close(c.firstUp)
	}
	if c.opts.OnConnect != nil {
		c.opts.OnConnect(st)
	}

	select {
	case <-cn.done:
	case <-c.ctx.Done():
		cn.writeClose(1000, "")
		t := time.NewTimer(time.Second) // wait for the server's close echo
		select {
		case <-cn.done:
		case <-t.C:
			cn.ws.Close()
			<-cn.done
		}
		t.Stop()
	}

	c.mu.Lock()
	c.cur.Store(nil)
	c.connected = make(chan struct{})
	for _, s := range c.subs {
		s.acked = false
	}
	c.mu.Unlock()
	code, reason := cn.closeInfo()
	c.log.Info("disconnected", "url", cn.url, "code", code, "reason", reason)
	if c.opts.OnDisconnect != nil {
		c.opts.OnDisconnect(code, reason)
	}
}
