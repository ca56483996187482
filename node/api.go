package node

import (
	"encoding/json"
	"slices"

	"github.com/sockmesh/sockmesh/httpapi"
)

// The node's side of the HTTP API (package httpapi): what the API asks of the local node.

// apiNode is the Node the API acts on.
type apiNode struct{ n *Node }

func (a apiNode) Name() string                            { return a.n.Name() }
func (a apiNode) Info() any                               { return a.n.Cluster() }
func (a apiNode) Publish(ch string, data json.RawMessage) { a.n.broker.Publish(ch, data) }
func (a apiNode) LocalChannels() map[string]int           { return a.n.broker.Channels() }
func (a apiNode) KickChannel(ch, msg string) int          { return a.n.KickChannel(ch, msg) }
func (a apiNode) DisconnectClaim(c, v string, code int, r string) int {
	return a.n.DisconnectClaim(c, v, code, r)
}

// Peers are the other alive nodes with an admin listener (backend members have none).
func (a apiNode) Peers() []httpapi.Peer {
	m := a.n.mesh
	if m == nil {
		return nil
	}
	var out []httpapi.Peer
	for _, mem := range m.Status().Members {
		if mem.Name == a.n.Name() || mem.Status != "alive" || mem.Admin == "" {
			continue
		}
		out = append(out, httpapi.Peer{Name: mem.Name, Admin: mem.Admin})
	}
	return out
}

// KickChannel kicks every local subscriber of channel off it (#kickOut with message) and
// returns how many there were.
func (n *Node) KickChannel(channel, message string) int {
	count := 0
	for _, s := range n.front.Sockets() {
		if slices.Contains(s.Subscriptions(), channel) {
			s.KickOut(channel, message)
			count++
		}
	}
	return count
}

// DisconnectClaim closes, with code and reason, every local connection whose token claim
// equals value (numbers compare in their shortest decimal form, booleans as true/false)
// and returns how many there were.
func (n *Node) DisconnectClaim(claim, value string, code int, reason string) int {
	count := 0
	for _, s := range n.front.Sockets() {
		c := s.Claims()
		if c == nil {
			continue
		}
		if v, ok := c[claim]; ok && httpapi.ClaimString(v) == value {
			s.Close(code, reason)
			count++
		}
	}
	return count
}
