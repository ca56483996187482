package mesh

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the mesh's Prometheus collectors. The peer label is the peer's logical name, so a
// restarted peer continues its series.
type metrics struct {
	sent      *prometheus.CounterVec // publications handed to the PUB socket for a peer
	received  *prometheus.CounterVec // publications received from a peer
	gaps      *prometheus.CounterVec // publications missing in a peer's per-link sequence and not repaired
	dropped   *prometheus.CounterVec // publications for a peer never sent: queue full, peer failed or removed
	rxBytes   *prometheus.CounterVec // bytes read from a peer's PUB socket (wire, all topics)
	linkUp    *prometheus.GaugeVec   // 1 while the link from a peer is up
	reconnect *prometheus.CounterVec // subscribe-socket recreations per peer
	rejected  *prometheus.CounterVec // envelopes dropped per peer and reason (labels peer, reason)
	unwanted  prometheus.Counter     // received publications for channels not wanted here
	fetches   *prometheus.CounterVec // peers' fetch requests, by outcome
	stalled   prometheus.Counter     // PUB connections closed by the stall watchdog
	rejConns  *prometheus.CounterVec // mesh connections closed for what the peer sent (label reason)
	slowPeers *prometheus.CounterVec // peers cut because their send queue passed PeerBuffer
	tooLarge  prometheus.Counter     // local publications too large for the mesh frame limit

	interestMsgs, interestChanges prometheus.Counter       // interest deltas sent, channels in them
	gossipErrs                    *prometheus.CounterVec   // bad datagrams and streams on the gossip port (label kind)
	hsTimeout                     prometheus.Counter       // connections closed by the handshake deadline
	members                       prometheus.Gauge         // alive members (logical names), self included
	hop                           *prometheus.HistogramVec // batch encoded at the origin → received here, per origin peer

	// Repair (retain.go, repair.go).
	repaired      *prometheus.CounterVec // publications from a peer that filled a gap by retransmission
	unrepaired    *prometheus.CounterVec // publications from a peer given up (labels peer, reason); also in gaps
	duplicates    *prometheus.CounterVec // publications from a peer received again and skipped
	repairReqs    *prometheus.CounterVec // repair requests sent to a peer
	retransmitted *prometheus.CounterVec // publications sent again to a peer that asked
	retainedBytes prometheus.Gauge       // retransmission windows, all links (accounted bytes)
	retainedMsgs  prometheus.Gauge       // publications in retransmission windows, all links
}

func newMetrics(reg prometheus.Registerer) *metrics {
	peer := []string{"peer"}
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_sent_messages_total",
			Help: "Publications sent to a peer over the mesh (control traffic excluded).",
		}, peer),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_received_messages_total",
			Help: "Publications received from a peer over the mesh (control traffic excluded).",
		}, peer),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_gaps_total",
			Help: "Publications from a peer missing in its per-link sequence and not repaired: lost on the path (the reason is in sockmesh_mesh_unrepaired_messages_total).",
		}, peer),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_dropped_messages_total",
			Help: "Publications for a peer that were never numbered, so that no repair can bring them back: too large for the mesh frame limit, or queued when the node shut down. (Publications for a peer that is away or cut are kept for repair; what it cannot get back, it counts as gaps.)",
		}, peer),
		rxBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_received_bytes_total",
			Help: "Bytes read from a peer's publish socket, all topics (wire level).",
		}, peer),
		linkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sockmesh_mesh_link_up",
			Help: "1 while the link from a peer is up (heartbeats arriving), else 0.",
		}, peer),
		reconnect: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_link_reconnects_total",
			Help: "Times the subscribe socket to a peer was recreated after an error or silence.",
		}, peer),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_rejected_envelopes_total",
			Help: "Envelopes from a peer's link dropped: reason unsealed, auth, replay (closed mesh), sealed (peer has a cluster key, this node none), decode, origin.",
		}, []string{"peer", "reason"}),
		unwanted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockmesh_mesh_unwanted_messages_total",
			Help: "Publications received for channels this node does not want (discarded).",
		}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_fetch_requests_total",
			Help: "Peers' requests for a channel's recent publications (recovery, docs/recovery.md), by outcome: answered, refused (over --mesh-fetch-rate, or recovery off).",
		}, []string{"outcome"}),
		stalled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockmesh_mesh_stalled_connections_total",
			Help: "Peer connections to the publish socket closed by the stall watchdog.",
		}),
		rejConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_rejected_connections_total",
			Help: "Mesh connections (accepted or dialled) closed for what the other end sent or failed to prove: reason frame_too_large, bad_frame, bad_greeting, auth (closed mesh: no or wrong cluster key), too_many_handshakes.",
		}, []string{"reason"}),
		slowPeers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_slow_peers_total",
			Help: "Times a peer subscribed to this node's publish socket was cut because its send queue passed --mesh-peer-buffer (peer = logical name, or unknown).",
		}, peer),
		gossipErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_gossip_errors_total",
			Help: "Bad datagrams and streams on the gossip port, as memberlist reports them: kind decrypt (no or wrong cluster key), decode, label, stream, flood (memberlist's handler queue full).",
		}, []string{"kind"}),
		interestMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockmesh_mesh_interest_messages_sent_total",
			Help: "Interest deltas this node announced (each gathers the subscribe/unsubscribe changes of up to --interest-flush-interval).",
		}),
		interestChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockmesh_mesh_interest_changes_sent_total",
			Help: "Channels added or removed in the interest deltas this node announced.",
		}),
		tooLarge: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockmesh_mesh_oversize_publications_total",
			Help: "Local publications not sent to any peer because they exceed the mesh frame limit (--mesh-max-frame).",
		}),
		hsTimeout: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockmesh_mesh_handshake_timeouts_total",
			Help: "Mesh connections closed because the ZMTP handshake did not finish in time.",
		}),
		hop: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sockmesh_mesh_hop_seconds",
			Help:    "Mesh hop latency: from a batch being encoded at the origin peer to its receipt here (includes the PUB queue and the network; across hosts it assumes synced clocks).",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16), // 25 µs … ~0.8 s
		}, peer),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sockmesh_mesh_members",
			Help: "Alive cluster members (logical names), this node included.",
		}),
		repaired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_repaired_messages_total",
			Help: "Publications from a peer that were missing (gap, freeze, partition, cut) and arrived by retransmission, delivered in order.",
		}, peer),
		unrepaired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_unrepaired_messages_total",
			Help: "Publications from a peer that were missing and could not be repaired, so are lost (also counted in sockmesh_mesh_gaps_total): reason beyond_window (left the origin's --mesh-retain-bytes/--mesh-retain-age window), restarted (the origin restarted or forgot the link), timeout (--mesh-repair-wait without progress), overflow (--mesh-reorder-bytes), peer_gone.",
		}, []string{"peer", "reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_duplicate_messages_total",
			Help: "Publications from a peer received more than once (a retransmission racing live traffic) and skipped: never delivered twice.",
		}, peer),
		repairReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_repair_requests_total",
			Help: "Repair requests this node sent to a peer (a gap, a tail it missed, a link back after a stall).",
		}, peer),
		retransmitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_mesh_retransmitted_messages_total",
			Help: "Publications this node sent again to a peer that reported them missing.",
		}, peer),
		retainedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sockmesh_mesh_retained_bytes",
			Help: "Bytes held in the retransmission windows of all links (channel + payload + 24 per publication, copied per link).",
		}),
		retainedMsgs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sockmesh_mesh_retained_messages",
			Help: "Publications held in the retransmission windows of all links.",
		}),
	}
	if reg != nil {
		m.sent = register(reg, m.sent)
		m.received = register(reg, m.received)
		m.gaps = register(reg, m.gaps)
		m.dropped = register(reg, m.dropped)
		m.rxBytes = register(reg, m.rxBytes)
		m.linkUp = register(reg, m.linkUp)
		m.reconnect = register(reg, m.reconnect)
		m.rejected = register(reg, m.rejected)
		m.unwanted = register(reg, m.unwanted)
		m.fetches = register(reg, m.fetches)
		m.stalled = register(reg, m.stalled)
		m.rejConns = register(reg, m.rejConns)
		m.slowPeers = register(reg, m.slowPeers)
		m.tooLarge = register(reg, m.tooLarge)
		m.interestMsgs = register(reg, m.interestMsgs)
		m.gossipErrs = register(reg, m.gossipErrs)
		m.interestChanges = register(reg, m.interestChanges)
		m.hsTimeout = register(reg, m.hsTimeout)
		m.members = register(reg, m.members)
		m.hop = register(reg, m.hop)
		m.repaired = register(reg, m.repaired)
		m.unrepaired = register(reg, m.unrepaired)
		m.duplicates = register(reg, m.duplicates)
		m.repairReqs = register(reg, m.repairReqs)
		m.retransmitted = register(reg, m.retransmitted)
		m.retainedBytes = register(reg, m.retainedBytes)
		m.retainedMsgs = register(reg, m.retainedMsgs)
	}
	return m
}

// register registers c, or returns the collector already registered under its name (a
// previous Mesh in the same process), so the series continue.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}
