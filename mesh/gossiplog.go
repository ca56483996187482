package mesh

import (
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Garbage on the gossip port. memberlist logs one line per bad datagram or stream ("Decrypt
// packet failed", "failed to receive: ...", "Failed to decode ping request", ...), so a
// stranger sending 10,000 junk datagrams wrote 10,000 error lines. gossipNoise recognises
// those lines, counts them in sockmesh_mesh_gossip_errors_total{kind}, and logs each kind at
// most once per gossipLogEvery, with the count since the last line and the last sender.
//
// What they cost otherwise is memberlist's own business, and bounded by it (v0.7.0): a UDP
// datagram is one read into a 65,536-byte buffer; a TCP stream is read under TCPTimeout (2 s
// here), its length fields are checked against 20 MiB (maxPushStateBytes, net.go:1139, 1258,
// 1338) before being read, and at most 128 push/pull streams are handled at once.

const gossipLogEvery = 10 * time.Second

// gossipNoiseKinds maps a fragment of a memberlist line to the kind it is counted as. The
// first match wins, so decryption failures reported inside "failed to receive" lines count
// as decrypt.
var gossipNoiseKinds = []struct{ fragment, kind string }{
	{"no installed keys could decrypt", "decrypt"},
	{"Decrypt packet failed", "decrypt"},
	{"remote state is not encrypted", "decrypt"},
	{"encryption is configured but", "decrypt"},
	{"unacceptable label", "label"},
	{"stream label header", "label"},
	{"packet label header", "label"},
	{"Got invalid checksum", "decode"},
	{"missing message type byte", "decode"},
	{"UDP packet too short", "decode"},
	{"Received invalid msgType", "decode"},
	{"msg type (", "decode"},
	{"Message type (", "decode"},
	{"Failed to decode", "decode"},
	{"Failed to decompress", "decode"},
	{"Compound request had", "decode"},
	{"Got ping for unexpected node", "decode"},
	{"Error decoding", "decode"}, // serf's own messages carried by memberlist
	{"handler queue full", "flood"},
	{"Remote node state size", "stream"},
	{"Failed to read remote state", "stream"},
	{"Failed to receive user message", "stream"},
	{"failed to receive", "stream"},
}

type gossipNoise struct {
	log   *slog.Logger
	count func(kind string)

	mu    sync.Mutex
	kinds map[string]*noiseKind
}

type noiseKind struct {
	since    int // lines since the last one logged
	last     string
	from     string
	loggedAt time.Time
}

func newGossipNoise(l *slog.Logger, count func(kind string)) *gossipNoise {
	return &gossipNoise{log: l, count: count, kinds: make(map[string]*noiseKind)}
}

// take reports whether line (without its level prefix) is gossip-port noise; if so it has been
// counted, and logged if its kind was quiet for gossipLogEvery.
func (g *gossipNoise) take(line string, now time.Time) bool {
	kind := ""
	for _, k := range gossipNoiseKinds {
		if strings.Contains(line, k.fragment) {
			kind = k.kind
			break
		}
	}
	if kind == "" {
		return false
	}
	g.count(kind)
	from := ""
	if i := strings.LastIndex(line, "from="); i >= 0 {
		from = strings.Fields(line[i+len("from="):] + " ")[0]
	}
	g.mu.Lock()
	k := g.kinds[kind]
	if k == nil {
		k = &noiseKind{}
		g.kinds[kind] = k
	}
	k.since++
	k.last, k.from = line, from
	if now.Sub(k.loggedAt) < gossipLogEvery {
		g.mu.Unlock()
		return true
	}
	n := k.since
	k.since, k.loggedAt = 0, now
	g.mu.Unlock()
	g.log.Warn("mesh: bad input on the gossip port (logged at most once per 10 s per kind; counted in sockmesh_mesh_gossip_errors_total)",
		"kind", kind, "count", n, "last_from", from, "last", line)
	return true
}

// flush logs what was counted and not yet logged, for kinds quiet for gossipLogEvery.
func (g *gossipNoise) flush(now time.Time) {
	g.mu.Lock()
	type line struct {
		kind, from, last string
		n                int
	}
	var out []line
	for kind, k := range g.kinds {
		if k.since > 0 && now.Sub(k.loggedAt) >= gossipLogEvery {
			out = append(out, line{kind, k.from, k.last, k.since})
			k.since, k.loggedAt = 0, now
		}
	}
	g.mu.Unlock()
	for _, l := range out {
		g.log.Warn("mesh: bad input on the gossip port (logged at most once per 10 s per kind; counted in sockmesh_mesh_gossip_errors_total)",
			"kind", l.kind, "count", l.n, "last_from", l.from, "last", l.last)
	}
}

// newGossipLogger is newStdLogger for memberlist and serf, with their noise taken out.
func newGossipLogger(l *slog.Logger, component string, noise *gossipNoise) *log.Logger {
	return log.New(&logWriter{logger: l, component: component, defaultLevel: slog.LevelInfo, noise: noise}, "", 0)
}
