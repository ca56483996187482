package mesh

import (
	"sort"
	"time"
)

// Status is what /cluster shows.
type Status struct {
	Self        string       `json:"self"`        // logical name
	Incarnation string       `json:"incarnation"` // this process start
	Joined      bool         `json:"joined"`
	Ready       bool         `json:"ready"`
	Members     []Member     `json:"members"` // one per logical name, self included, sorted
	Peers       []PeerStatus `json:"peers"`   // one per linked peer, sorted by name
	// InterestVersion and Channels describe our own announced interest set.
	InterestVersion uint64 `json:"interest_version"`
	Channels        int    `json:"channels"`
	// StalledConnections and HandshakeTimeouts count connections closed by the transport.
	StalledConnections uint64 `json:"stalled_connections"`
	HandshakeTimeouts  uint64 `json:"handshake_timeouts"`
}

// PeerStatus describes the link from one peer.
type PeerStatus struct {
	Name          string    `json:"name"`
	Incarnation   string    `json:"incarnation"`
	Mesh          string    `json:"mesh"`
	Link          string    `json:"link"` // connecting | up | down
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// Channels is how many channels the peer wants from us; InterestVersion the version of its
	// interest set we hold; InterestSynced whether that set is known to be current.
	Channels        int    `json:"channels"`
	InterestVersion uint64 `json:"interest_version"`
	InterestSynced  bool   `json:"interest_synced"`
	// Publications sent to it, received from it, missing in its sequence, and dropped on its
	// full send queue.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Gaps     uint64 `json:"gaps"`
	Dropped  uint64 `json:"dropped"`
	Queued   int    `json:"queued"`
	// ReceivedBytes is everything read from its PUB socket (wire level, control included);
	// ReceivedPayloadBytes the payload bytes of the publications among it.
	ReceivedBytes        uint64 `json:"received_bytes"`
	ReceivedPayloadBytes uint64 `json:"received_payload_bytes"`
	Reconnects           uint64 `json:"reconnects"`
	// Rejected counts envelopes from the peer's link that were dropped: failed to open (closed
	// mesh), replayed, undecodable or from another incarnation.
	Rejected uint64 `json:"rejected"`
}

// Status returns a snapshot of membership and links.
func (m *Mesh) Status() Status {
	st := Status{
		Self:               m.cfg.Name,
		Incarnation:        m.inc,
		Joined:             m.joined.Load(),
		Ready:              m.Ready(),
		StalledConnections: m.stalled.Load(),
		HandshakeTimeouts:  m.hsTimeouts.Load(),
	}
	if m.serf != nil {
		for _, mi := range m.members() {
			st.Members = append(st.Members, mi.member)
		}
	}
	m.mu.RLock()
	b := m.table.LocalBeat()
	st.InterestVersion, st.Channels = b.Version, b.Count
	for _, p := range m.peers {
		n, v := m.table.PeerCount(p)
		ps := PeerStatus{
			Name:                 p.logical,
			Incarnation:          p.inc,
			Mesh:                 p.meshEP,
			Link:                 p.linkState(),
			Channels:             n,
			InterestVersion:      v,
			InterestSynced:       m.table.PeerSynced(p),
			Sent:                 p.sent.Load(),
			Received:             p.received.Load(),
			Gaps:                 p.gaps.Load(),
			Dropped:              p.dropped.Load(),
			ReceivedBytes:        p.rxWire.Load(),
			ReceivedPayloadBytes: p.rxPayload.Load(),
			Reconnects:           p.reconnects.Load(),
			Rejected:             p.rejected.Load(),
		}
		if hb := p.lastHB.Load(); hb != 0 {
			ps.LastHeartbeat = time.Unix(0, hb)
		}
		p.qmu.Lock()
		ps.Queued = len(p.q)
		p.qmu.Unlock()
		st.Peers = append(st.Peers, ps)
	}
	m.mu.RUnlock()
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	return st
}

// PeerChannels returns the channels the peer with logical name peer wants from us, sorted.
func (m *Mesh) PeerChannels(peer string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, p := range m.peers {
		if p.logical == peer {
			return m.table.PeerChannels(p)
		}
	}
	return nil
}
