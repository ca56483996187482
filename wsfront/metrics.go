package wsfront

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the front's Prometheus collectors (names start with sockmesh_ws_).
type Metrics struct {
	Connections       prometheus.Gauge
	UpgradeFailures   prometheus.Counter
	Handshakes        prometheus.Counter
	HandshakeFailures *prometheus.CounterVec
	AuthFailures      *prometheus.CounterVec
	TokensIssued      prometheus.Counter
	PongTimeouts      prometheus.Counter
	SlowConsumers     prometheus.Counter
	Oversized         prometheus.Counter
	RawFrames         prometheus.Counter
	FramesIn          prometheus.Counter
	FramesOut         prometheus.Counter
	PacketsOut        prometheus.Counter
	Writes            prometheus.Counter
	Subscribes        prometheus.Counter
	SubscribeFailures *prometheus.CounterVec
	Publishes         prometheus.Counter
	PublishFailures   *prometheus.CounterVec
	Events            *prometheus.CounterVec
	Refused           *prometheus.CounterVec
	PacedHandshakes   prometheus.Counter
	ProtocolCloses    *prometheus.CounterVec
	HookCalls         *prometheus.CounterVec
	HandlerPanics     prometheus.Counter
	WriteTimeouts     prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "sockmesh_ws_" + name, Help: help})
	}
	cv := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sockmesh_ws_" + name, Help: help}, []string{label})
	}
	m := &Metrics{
		Connections:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "sockmesh_ws_connections", Help: "Open client WebSocket connections."}),
		UpgradeFailures:   c("upgrade_failures_total", "HTTP requests on the WebSocket path that failed to upgrade."),
		Handshakes:        c("handshakes_total", "Completed SocketCluster handshakes."),
		HandshakeFailures: cv("handshake_failures_total", "Connections closed before or at the handshake, by reason.", "reason"),
		AuthFailures:      cv("auth_failures_total", "Rejected auth tokens, by error name.", "error"),
		TokensIssued:      c("tokens_issued_total", "Auth tokens issued with #setAuthToken."),
		PongTimeouts:      c("pong_timeouts_total", "Connections closed with 4001 because the client stopped answering pings."),
		SlowConsumers:     c("slow_consumer_disconnects_total", "Connections cut because their send queue overflowed."),
		Oversized:         c("oversized_frames_total", "Connections closed with 1009 for a frame over the size limit."),
		RawFrames:         c("raw_frames_total", "Inbound frames that were not a protocol packet (ignored)."),
		FramesIn:          c("frames_received_total", "Inbound WebSocket frames."),
		FramesOut:         c("frames_sent_total", "Outbound WebSocket frames (an array frame with --array-frames counts once)."),
		Writes:            c("writes_total", "Writes of queued frames to clients, each one system call carrying one or more frames (frames_sent_total / writes_total is the coalescing)."),
		PacketsOut:        c("packets_sent_total", "Outbound protocol packets."),
		Subscribes:        c("subscribes_total", "Accepted subscriptions."),
		SubscribeFailures: cv("subscribe_failures_total", "Refused subscriptions, by reason.", "reason"),
		Publishes:         c("publishes_total", "Accepted client publications."),
		PublishFailures:   cv("publish_failures_total", "Refused client publications, by reason.", "reason"),
		Events:            cv("events_total", "Application events from clients, by kind.", "kind"),
		PacedHandshakes:   c("paced_handshakes_total", "Connections that waited for their turn of the node-wide connection rate (--handshake-rate)."),
		HookCalls:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sockmesh_ws_hook_calls_total", Help: "Decision hook calls, by action and result (allowed, denied, failed)."}, []string{"action", "result"}),
		WriteTimeouts:     c("write_timeouts_total", "Connections cut because one write to them took longer than --write-timeout (a client that stopped reading with its kernel buffers full)."),
		HandlerPanics:     c("handler_panics_total", "Panics in an application handler, middleware or hook (the connection is closed with 1011; the node keeps serving)."),
		ProtocolCloses:    cv("protocol_closes_total", "Connections this server closed for breaking RFC 6455, by reason (invalid_utf8: 1007, protocol_error: 1002, too_big: 1009).", "reason"),
		Refused:           cv("refused_connections_total", "Upgrade requests refused by a limit, by reason (origin, node_limit, ip_limit, rate, node_rate).", "reason"),
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.UpgradeFailures, m.Handshakes, m.HandshakeFailures, m.AuthFailures,
			m.TokensIssued, m.PongTimeouts, m.SlowConsumers, m.Oversized, m.RawFrames, m.FramesIn, m.FramesOut,
			m.PacketsOut, m.Writes, m.Subscribes, m.SubscribeFailures, m.Publishes, m.PublishFailures, m.Events, m.Refused, m.PacedHandshakes, m.ProtocolCloses, m.HookCalls, m.HandlerPanics, m.WriteTimeouts)
	}
	return m
}
