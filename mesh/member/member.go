// Package member joins a sockmesh cluster as a member that serves no WebSocket clients: a
// backend that publishes into channels and subscribes to them directly on the mesh, without
// a WebSocket or an HTTP call in between and without a central broker.
//
// A Member is a mesh.Mesh whose deliveries go to Go handlers. It discovers the nodes through
// the same seeds (mesh.Config.Join), gets exactly the channels it subscribes to (the same
// interest routing as a node: a peer sends it a channel only while it has a handler for it),
// counts gaps per link like a node, and uses whatever node-to-node security mesh.Config
// carries. Its publications go to every node whose clients subscribe to the channel, exactly
// like a node's.
//
// Subscriptions are to exact channel names: the mesh routes by exact name, so there are no
// pattern subscriptions (a backend that follows orders.* subscribes to the order channels it
// knows, or learns them from its own data).
//
//	m, err := member.New(mesh.Config{Name: "billing-1", MeshAddr: "10.0.0.9:8002",
//		GossipAddr: "10.0.0.9:8003", Join: []string{"10.0.0.1:8003"}})
//	m.Start(ctx)
//	m.Subscribe("orders.created", func(ch string, data json.RawMessage) { ... })
//	m.Publish("billing.invoices", map[string]any{"order": 7})
package member

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/sockmesh/sockmesh/mesh"
)

// MaxChannelLength is the longest channel name a Member accepts (the node's default).
const MaxChannelLength = 256

// Handler receives one publication: its channel and its data (JSON, retained freely).
// Handlers of publications from peers run on the mesh's receive goroutine of that peer (in
// order per peer, concurrently across peers) and must not block for long: a slow handler
// delays that peer's traffic to this member. Handlers of the member's own publications run
// on the publishing goroutine, before Publish returns.
type Handler func(channel string, data json.RawMessage)

// Member is one backend member of a sockmesh cluster. All methods are safe for concurrent
// use.
type Member struct {
	m *mesh.Mesh

	mu     sync.Mutex
	subs   map[string][]*Subscription // copy-on-write per channel
	closed bool
}

// Subscription is one handler on one channel.
type Subscription struct {
	mb      *Member
	channel string
	h       Handler
}

// New prepares a member from cfg (Name, MeshAddr and GossipAddr are required, as for a
// node; WSURL and AdminURL stay empty: nodes see a member without clients). cfg.Deliver
// must be nil: the member routes deliveries to its handlers. Nothing is bound until Start.
func New(cfg mesh.Config) (*Member, error) {
	if cfg.Deliver != nil {
		return nil, errors.New("member: Config.Deliver must be nil (deliveries go to Subscribe handlers)")
	}
	mb := &Member{subs: map[string][]*Subscription{}}
	cfg.Deliver = mb.deliver
	m, err := mesh.New(cfg)
	if err != nil {
		return nil, err
	}
	mb.m = m
	return mb, nil
}

// Start binds and joins the cluster (see mesh.Mesh.Start): if no seed answers yet, joining
// goes on in the background and Ready stays false.
func (mb *Member) Start(ctx context.Context) error { return mb.m.Start(ctx) }

// Ready reports whether the member has joined and has an up link, with interest in sync,
// from every alive node.
func (mb *Member) Ready() bool { return mb.m.Ready() }

// Err delivers a fatal mesh error (e.g. the name is held by another live process).
func (mb *Member) Err() <-chan error { return mb.m.Err() }

// Status is the mesh's view of the cluster from this member.
func (mb *Member) Status() mesh.Status { return mb.m.Status() }

// Mesh is the underlying mesh.
func (mb *Member) Mesh() *mesh.Mesh { return mb.m }

// ValidChannel reports why ch cannot be a channel name, or "" when it can (the rules of a
// node with the default limit).
func ValidChannel(ch string) string {
	switch {
	case ch == "":
		return "channel name must not be empty"
	case len(ch) > MaxChannelLength:
		return fmt.Sprintf("channel name is longer than the limit of %d bytes", MaxChannelLength)
	case !utf8.ValidString(ch):
		return "channel name is not valid UTF-8"
	case ch[0] < 0x20:
		return "channel name must not start with a control character"
	}
	for i := 0; i < len(ch); i++ {
		if ch[i] == 0 {
			return "channel name must not contain NUL"
		}
	}
	return ""
}

// Subscribe calls h for every publication on channel, from any node or from this member,
// until the Subscription is cancelled. The first handler of a channel makes the member
// announce its interest to every node (live cluster-wide within the mesh's interest bound:
// a publication made before that may not arrive); later ones only add a handler.
func (mb *Member) Subscribe(channel string, h Handler) (*Subscription, error) {
	if why := ValidChannel(channel); why != "" {
		return nil, fmt.Errorf("member: subscribe %q: %s", channel, why)
	}
	if h == nil {
		return nil, errors.New("member: subscribe: nil handler")
	}
	s := &Subscription{mb: mb, channel: channel, h: h}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.closed {
		return nil, errors.New("member: closed")
	}
	old := mb.subs[channel]
	mb.subs[channel] = append(old[:len(old):len(old)], s)
	if len(old) == 0 {
		mb.m.AddInterest(channel) // never blocks
	}
	return s, nil
}

// Channel is the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Unsubscribe removes the handler; the last handler of a channel withdraws the member's
// interest (after the mesh's unsubscribe delay). A second call does nothing.
func (s *Subscription) Unsubscribe() {
	mb := s.mb
	mb.mu.Lock()
	defer mb.mu.Unlock()
	old := mb.subs[s.channel]
	for i, x := range old {
		if x == s {
			nw := make([]*Subscription, 0, len(old)-1)
			nw = append(append(nw, old[:i]...), old[i+1:]...)
			if len(nw) == 0 {
				delete(mb.subs, s.channel)
				if !mb.closed {
					mb.m.RemoveInterest(s.channel)
				}
			} else {
				mb.subs[s.channel] = nw
			}
			return
		}
	}
}

// Channels returns the channels the member has handlers for.
func (mb *Member) Channels() []string {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	out := make([]string, 0, len(mb.subs))
	for ch := range mb.subs {
		out = append(out, ch)
	}
	return out
}

func (mb *Member) handlers(channel string) []*Subscription {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.subs[channel]
}

func (mb *Member) deliver(channel string, data, _ []byte) {
	for _, s := range mb.handlers(channel) {
		s.h(channel, data)
	}
}

// Publish publishes data on channel to every node whose clients subscribe to it (and to
// this member's own handlers), exactly as a node's server-side publish. data is marshalled
// to JSON; a json.RawMessage or []byte must already be valid JSON. It never blocks on the
// network: what a full peer queue cannot take is dropped and counted by the mesh.
func (mb *Member) Publish(channel string, data any) error {
	if why := ValidChannel(channel); why != "" {
		return fmt.Errorf("member: publish %q: %s", channel, why)
	}
	var b []byte
	switch d := data.(type) {
	case json.RawMessage:
		b = d
	case []byte:
		b = d
	default:
		var err error
		if b, err = json.Marshal(data); err != nil {
			return fmt.Errorf("member: publish %q: %w", channel, err)
		}
	}
	if !json.Valid(b) {
		return fmt.Errorf("member: publish %q: data is not valid JSON", channel)
	}
	b = append([]byte(nil), b...) // the mesh retains it until sent
	mb.m.Publish(channel, b)
	mb.deliver(channel, b, nil)
	return nil
}

// Close leaves the cluster gracefully (nodes see "left", bounded by ctx) and stops the mesh.
func (mb *Member) Close(ctx context.Context) error {
	mb.mu.Lock()
	if mb.closed {
		mb.mu.Unlock()
		return nil
	}
	mb.closed = true
	mb.mu.Unlock()
	lerr := mb.m.Leave(ctx)
	return errors.Join(lerr, mb.m.Close())
}
