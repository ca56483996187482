package mesh

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"golang.org/x/time/rate"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// Fetch is the mesh's one request-reply between two nodes, for the node layer's recovery
// (docs/recovery.md): a node whose client asks for publications it did not receive asks a peer
// that did. Request and reply are opaque here. A reply is accepted only from the peer the
// request went to, and each peer's requests are rate-limited on the answering side, so that a
// member cannot make this node scan its channels without bound.

// Errors of Fetch.
var (
	ErrFetchRefused = errors.New("mesh: the peer refused the fetch request")
	ErrNoPeer       = errors.New("mesh: no such peer with an up link")
)

// fetches holds the requests in flight.
type fetches struct {
	mu      sync.Mutex
	next    uint64
	pending map[uint64]*pendingFetch
}

type pendingFetch struct {
	peer  string // serf name the request went to
	reply chan *meshpb.FetchReply
}

// Fetch sends request about channel to peer (a serf name, as Wanting lists them) and waits
// for its reply until ctx ends.
func (m *Mesh) Fetch(ctx context.Context, peer, channel string, request []byte) ([]byte, error) {
	if !validChannel(channel) {
		return nil, fmt.Errorf("mesh: invalid channel %q", channel)
	}
	m.mu.RLock()
	p, ok := m.peers[peer]
	m.mu.RUnlock()
	if !ok || p.linkState() != LinkUp {
		return nil, ErrNoPeer
	}
	pf := &pendingFetch{peer: peer, reply: make(chan *meshpb.FetchReply, 1)}
	m.fetch.mu.Lock()
	if m.fetch.pending == nil {
		m.fetch.pending = map[uint64]*pendingFetch{}
	}
	m.fetch.next++
	id := m.fetch.next
	m.fetch.pending[id] = pf
	m.fetch.mu.Unlock()
	defer func() {
		m.fetch.mu.Lock()
		delete(m.fetch.pending, id)
		m.fetch.mu.Unlock()
	}()
	m.sendControl(p.mailboxB, &meshpb.Envelope{Target: p.serfName, Body: &meshpb.Envelope_FetchRequest{
		FetchRequest: &meshpb.FetchRequest{Id: id, Channel: channel, Request: request}}})
	select {
	case r := <-pf.reply:
		if r.Refused {
			return nil, ErrFetchRefused
		}
		return r.Body, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Wanting lists the peers with an up link that want channel (they receive it), by serf name,
// sorted.
func (m *Mesh) Wanting(channel string) []string {
	m.mu.RLock()
	ps := m.table.Route(channel)
	m.mu.RUnlock()
	var out []string
	for _, p := range ps {
		if p.linkState() == LinkUp {
			out = append(out, p.serfName)
		}
	}
	sort.Strings(out)
	return out
}

// Alone reports whether this node has no peer (member with a link, up or coming up).
func (m *Mesh) Alone() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.peers) == 0
}

// fetchReplied hands a reply from p to the request it answers; replies to no request of ours,
// or to one sent to another peer, are ignored.
func (m *Mesh) fetchReplied(p *peer, r *meshpb.FetchReply) {
	m.fetch.mu.Lock()
	pf := m.fetch.pending[r.Id]
	if pf != nil && pf.peer == p.serfName {
		delete(m.fetch.pending, r.Id)
	} else {
		pf = nil
	}
	m.fetch.mu.Unlock()
	if pf != nil {
		pf.reply <- r // buffered, one reply per request
	}
}

// fetchRequested answers p's request (on p's receive goroutine).
func (m *Mesh) fetchRequested(p *peer, r *meshpb.FetchRequest) {
	reply := &meshpb.FetchReply{Id: r.Id}
	switch {
	case m.cfg.Fetch == nil || !validChannel(r.Channel) || !p.fetchLimit(m.cfg.FetchRate).Allow():
		reply.Refused = true
		m.met.fetches.WithLabelValues("refused").Inc()
	default:
		// The reply must fit a frame with its envelope around it.
		reply.Body = m.cfg.Fetch(r.Channel, r.Request, m.frameBudget()-len(m.self)-len(p.serfName)-64)
		m.met.fetches.WithLabelValues("answered").Inc()
	}
	m.sendControl(p.mailboxB, &meshpb.Envelope{Target: p.serfName, Body: &meshpb.Envelope_FetchReply{FetchReply: reply}})
}

// fetchLimit is p's request limiter, made on first use.
func (p *peer) fetchLimit(perSecond int) *rate.Limiter {
	p.fetchOnce.Do(func() { p.fetchLim = rate.NewLimiter(rate.Limit(perSecond), perSecond) })
	return p.fetchLim
}
