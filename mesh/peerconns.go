package mesh

import (
	"net"
	"sync"
)

// peerConns finds the accepted connection (and so the send queue) of each peer subscribed to
// our PUB socket, by the identity its SUB announced in READY (its Serf name; see runLink). The
// flusher reads a peer's backlog through it before handing that peer another batch, and the
// mesh cuts a peer through it. A stranger's connection may claim any identity; it only ever
// holds back or cuts itself, since a later connection with the same identity replaces it here.
type peerConns struct {
	mu   sync.RWMutex
	byID map[string]*smConn
}

func newPeerConns() *peerConns { return &peerConns{byID: make(map[string]*smConn)} }

func (pc *peerConns) add(c *smConn) {
	id := c.guard.identity
	if id == "" {
		return
	}
	pc.mu.Lock()
	pc.byID[id] = c
	pc.mu.Unlock()
	if c.closed.Load() { // closed before it got here: Close's remove came first
		pc.remove(c)
	}
}

func (pc *peerConns) remove(c *smConn) {
	id := c.guard.identity
	pc.mu.Lock()
	if pc.byID[id] == c {
		delete(pc.byID, id)
	}
	pc.mu.Unlock()
}

// holdBack reports whether the peer with this identity has so much queued that it should get
// nothing more until its queue drains (then the transport calls onDrain).
func (pc *peerConns) holdBack(id string) bool {
	pc.mu.RLock()
	c := pc.byID[id]
	pc.mu.RUnlock()
	return c != nil && c.out != nil && c.out.holdBack()
}

// handed records n bytes of a mailbox message for the peer handed to zmq4.
func (pc *peerConns) handed(id string, n int) {
	pc.mu.RLock()
	c := pc.byID[id]
	pc.mu.RUnlock()
	if c != nil && c.out != nil {
		c.out.handed(n)
	}
}

// cut closes the peer's connection and returns its remote address; ok is false if there was
// none.
func (pc *peerConns) cut(id string) (remote net.Addr, ok bool) {
	pc.mu.RLock()
	c := pc.byID[id]
	pc.mu.RUnlock()
	if c == nil || c.closed.Load() {
		return nil, false
	}
	c.Close()
	return c.RemoteAddr(), true
}
