package node

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sockmesh/sockmesh/scproto"
)

// Drain: how a node leaves without losing its clients.
//
//  1. /readyz answers 503 at once, so load balancers and Kubernetes stop routing to the node;
//     the client listener (and the HTTP API) close, so a balancer's connect attempt is refused
//     and retried on another node.
//  2. Client sockets are closed with 4000 (socketcluster-client reconnects at once) at jittered
//     times over at most the drain duration: the closes are spread evenly, one per slot (at
//     most 50 ms), at a random point of each slot, in random order, so the reconnects do not
//     hit the others as a herd.
//  3. The mesh stays up — links, gossip membership, our interest — until the channels our
//     clients held are wanted from us by some other node again, i.e. the clients resubscribed
//     elsewhere and their interest is live there (bounded by DrainHandoffWait: clients that do
//     not come back must not hold the node forever). Leaving the gossip earlier would tear the
//     links down while clients are still here, losing what they publish and what is published
//     to them; the mesh has no "draining" tag, and /readyz plus the closed listener already
//     withdraw the node from the places clients are routed by.
//  4. Then the node leaves the gossip (peers see "left", not "failed"), closes the mesh, and
//     the process exits 0.
//
// A drain starts on SIGTERM (Shutdown) or on POST /drain on the admin address (Drain), which
// `sockmesh drain` and a Kubernetes preStop hook use.

// DrainHandoffWait bounds how long a drain keeps the mesh up after its clients are gone,
// waiting for their channels to be wanted by other nodes.
var DrainHandoffWait = 5 * time.Second

// DrainCloseCode is the close code of a drain: socketcluster-client reconnects at once.
const DrainCloseCode = scproto.CloseServerPingTimeout

// DrainStatus is the body of GET /drain.
type DrainStatus struct {
	Draining bool      `json:"draining"`
	Phase    string    `json:"phase"` // serving | closing-clients | handoff | leaving | stopped
	Started  time.Time `json:"started,omitzero"`
	// Clients is how many client sockets are still open; Channels how many of the channels
	// they held at the start are not yet wanted by another node.
	Clients  int `json:"clients"`
	Channels int `json:"channels_pending"`
}

type drainState struct {
	draining atomic.Bool
	once     sync.Once
	done     chan struct{} // closed when a Shutdown has finished
	doneOnce sync.Once
	mu       sync.Mutex
	phase    string
	started  time.Time
	pending  int
	err      error
	gauge    prometheus.Gauge
}

func (d *drainState) doneCh() chan struct{} {
	d.once.Do(func() { d.done = make(chan struct{}) })
	return d.done
}

func (d *drainState) setPhase(p string) {
	d.mu.Lock()
	d.phase = p
	d.mu.Unlock()
}

// begin marks the node draining (readyz fails from now on).
func (d *drainState) begin() {
	d.mu.Lock()
	if !d.draining.Load() {
		d.started = time.Now()
		d.phase = "closing-clients"
		d.draining.Store(true)
		if d.gauge != nil {
			d.gauge.Set(1)
		}
	}
	d.mu.Unlock()
}

// Draining reports whether a drain (or shutdown) has started.
func (n *Node) Draining() bool { return n.drain.draining.Load() }

// Done is closed when Shutdown has finished, whoever started it (SIGTERM or POST /drain).
func (n *Node) Done() <-chan struct{} { return n.drain.doneCh() }

// DrainErr is what the finished Shutdown returned.
func (n *Node) DrainErr() error {
	n.drain.mu.Lock()
	defer n.drain.mu.Unlock()
	return n.drain.err
}

// Drain starts a Shutdown in the background, bounded like serve's SIGTERM path (drain
// duration + 15 s), and returns at once; Done tells when it has finished.
func (n *Node) Drain() {
	n.drain.begin()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainDuration+15*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	}()
}

// DrainStatus is what GET /drain shows.
func (n *Node) DrainStatus() DrainStatus {
	d := &n.drain
	d.mu.Lock()
	st := DrainStatus{Draining: d.draining.Load(), Phase: d.phase, Started: d.started, Channels: d.pending}
	d.mu.Unlock()
	if st.Phase == "" {
		st.Phase = "serving"
	}
	st.Clients = len(n.front.Sockets())
	return st
}

// finishDrain records Shutdown's result and closes Done.
func (n *Node) finishDrain(err error) {
	d := &n.drain
	d.mu.Lock()
	d.err = err
	d.phase = "stopped"
	d.mu.Unlock()
	ch := d.doneCh()
	d.doneOnce.Do(func() { close(ch) })
}

// drainMaxSlot caps the time reserved for one client's close: the spread is there to keep a
// large crowd from reconnecting to the other nodes as one herd, not to hold back a handful of
// clients, so at least 1/drainMaxSlot clients are closed per second.
const drainMaxSlot = 50 * time.Millisecond

// closeClientsJittered closes every client socket with DrainCloseCode, one per slot of
// min(spread/len, drainMaxSlot) at a random point of its slot, in random order, then lets the
// front finish (stragglers closed at once, goroutines waited for). It stops waiting as soon
// as every client is gone.
func (n *Node) closeClientsJittered(ctx context.Context, spread time.Duration) error {
	socks := n.front.Sockets()
	rand.Shuffle(len(socks), func(i, j int) { socks[i], socks[j] = socks[j], socks[i] })
	if spread > 0 && len(socks) > 0 {
		slot := min(spread/time.Duration(len(socks)), drainMaxSlot)
		start := time.Now()
	loop:
		for i, sk := range socks {
			select {
			case <-sk.Done():
				continue // left by itself: no close, and no slot to wait out
			default:
			}
			at := start.Add(slot * time.Duration(i))
			if slot > 0 {
				at = at.Add(rand.N(slot))
			}
			if d := time.Until(at); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-sk.Done():
					t.Stop()
					continue
				case <-ctx.Done():
					t.Stop()
					break loop
				}
			}
			sk.Close(DrainCloseCode, "node draining")
		}
	}
	return n.front.Shutdown(ctx, DrainCloseCode, "node draining", 0)
}

// awaitHandoff keeps the mesh up until every channel in held is wanted from us by some peer
// with an up link (its subscribers now live there), until DrainHandoffWait, or until ctx.
// It returns how many channels were still not wanted elsewhere.
func (n *Node) awaitHandoff(ctx context.Context, held map[string]int) int {
	if len(held) == 0 {
		return 0
	}
	deadline := time.Now().Add(DrainHandoffWait)
	pending := len(held)
	for {
		st := n.mesh.Status()
		wanted := make(map[string]struct{})
		peersUp := 0
		for _, p := range st.Peers {
			if p.Link != "up" {
				continue
			}
			peersUp++
			for _, ch := range n.mesh.PeerChannels(p.Name) {
				wanted[ch] = struct{}{}
			}
		}
		pending = 0
		for ch := range held {
			if _, ok := wanted[ch]; !ok {
				pending++
			}
		}
		n.drain.mu.Lock()
		n.drain.pending = pending
		n.drain.mu.Unlock()
		if pending == 0 || peersUp == 0 || time.Now().After(deadline) {
			return pending
		}
		select {
		case <-ctx.Done():
			return pending
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// drainClients is Shutdown's client part: mark draining, stop accepting, close the clients
// with jitter over spread, and wait for their interest to be live on other nodes. It returns
// the front's error (sockets that had to be cut at ctx's end).
func (n *Node) drainClients(ctx context.Context, spread time.Duration) error {
	n.drain.begin()
	_ = n.wsLn.Close() // stop accepting; open WebSocket connections are not affected
	if n.apiSrv != nil {
		_ = n.apiSrv.Close() // a draining node takes no more API calls
	}
	held := n.broker.Channels()
	clients := len(n.front.Sockets())
	start := time.Now()
	err := n.closeClientsJittered(ctx, spread)
	n.cfg.Logger.Info("drain: clients closed", "clients", clients, "channels", len(held), "took", time.Since(start).Round(time.Millisecond))
	n.drain.setPhase("handoff")
	hstart := time.Now()
	// Leave time for the gossip leave after the handoff wait.
	hctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		hctx, cancel = context.WithDeadline(ctx, dl.Add(-3500*time.Millisecond))
		defer cancel()
	}
	if pending := n.awaitHandoff(hctx, held); pending > 0 {
		n.cfg.Logger.Warn("drain: channels not wanted by another node when the handoff wait ended", "pending", pending, "of", len(held), "waited", time.Since(hstart).Round(time.Millisecond))
	} else {
		n.cfg.Logger.Info("drain: interest handed off", "channels", len(held), "waited", time.Since(hstart).Round(time.Millisecond))
	}
	n.drain.setPhase("leaving")
	return err
}

// drainReserve is the part of a Shutdown's time budget kept after the client closes: the
// handoff wait, the gossip leave (up to 3 s) and a margin.
func drainReserve() time.Duration { return DrainHandoffWait + 4*time.Second }

// withDrain adds the drain routes to the admin handler and makes /readyz fail while draining.
//
// POST /drain starts a drain and answers 202 with the status; GET /drain shows it. POST is
// refused (403) to requests carrying an Origin header (a browser page must not be able to
// drain a node through a user's loopback), and to non-loopback peers unless they present
// the HTTP API key (--api-key; headers as for the API).
func (n *Node) withDrain(next http.Handler) http.Handler {
	n.drain.gauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sockmesh_node_draining", Help: "1 while the node is draining (readyz fails, clients are being moved), else 0.",
	})
	_ = n.reg.Register(n.drain.gauge)
	if n.Draining() {
		n.drain.gauge.Set(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if n.Draining() {
			http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /drain", func(w http.ResponseWriter, _ *http.Request) {
		writeDrainStatus(w, http.StatusOK, n.DrainStatus())
	})
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		if why := n.drainForbidden(r); why != "" {
			http.Error(w, why, http.StatusForbidden)
			return
		}
		if !n.Draining() {
			n.cfg.Logger.Info("drain requested", "remote", r.RemoteAddr)
			n.Drain()
		}
		writeDrainStatus(w, http.StatusAccepted, n.DrainStatus())
	})
	return mux
}

func (n *Node) drainForbidden(r *http.Request) string {
	if r.Header.Get("Origin") != "" {
		return "drain: refused to a browser request (Origin header present)"
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
		return ""
	}
	if n.api != nil && n.api.Authorized(r) {
		return ""
	}
	return "drain: allowed from loopback, or with the API key (--api-key) in X-API-Key or Authorization: apikey KEY"
}

func writeDrainStatus(w http.ResponseWriter, code int, st DrainStatus) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
