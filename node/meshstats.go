package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// meshStats exports, at scrape time, what the mesh's Status knows per peer and its own
// collectors do not: the send-queue depth, the channels the peer wants from us, and the
// link state by name. It reads mesh.Status, so nothing is added to the publish path.
type meshStats struct {
	n                       *Node
	queue, channels, states *prometheus.Desc
}

func newMeshStats(n *Node) *meshStats {
	return &meshStats{
		n: n,
		queue: prometheus.NewDesc("sockmesh_mesh_queue_depth",
			"Publications waiting in a peer's send queue (sampled at scrape).", []string{"peer"}, nil),
		channels: prometheus.NewDesc("sockmesh_mesh_peer_channels",
			"Channels a peer wants from this node (its interest set as known here).", []string{"peer"}, nil),
		states: prometheus.NewDesc("sockmesh_mesh_link_state",
			"1 for the current state of the link from a peer (connecting, up, down), 0 for the others.", []string{"peer", "state"}, nil),
	}
}

func (c *meshStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.queue
	ch <- c.channels
	ch <- c.states
}

func (c *meshStats) Collect(ch chan<- prometheus.Metric) {
	c.n.mu.Lock()
	m := c.n.mesh
	c.n.mu.Unlock()
	if m == nil {
		return
	}
	// One series per logical name: during a restart two incarnations of a peer may be
	// linked at once; their queues add up and the link counts as its best state.
	type agg struct {
		queued, channels int
		link             string
	}
	rank := map[string]int{"down": 0, "connecting": 1, "up": 2}
	peers := map[string]*agg{}
	for _, p := range m.Status().Peers {
		a := peers[p.Name]
		if a == nil {
			a = &agg{link: p.Link}
			peers[p.Name] = a
		}
		a.queued += p.Queued
		a.channels = max(a.channels, p.Channels)
		if rank[p.Link] > rank[a.link] {
			a.link = p.Link
		}
	}
	for name, a := range peers {
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(a.queued), name)
		ch <- prometheus.MustNewConstMetric(c.channels, prometheus.GaugeValue, float64(a.channels), name)
		for _, s := range []string{"connecting", "up", "down"} {
			v := 0.0
			if a.link == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.states, prometheus.GaugeValue, v, name, s)
		}
	}
}
