package node

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ClusterMember is one entry of /cluster.
type ClusterMember struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	WS     string `json:"ws"`
	Mesh   string `json:"mesh"`
	Gossip string `json:"gossip"`
	Admin  string `json:"admin,omitempty"`
}

// ClusterView is the body of /cluster.
type ClusterView struct {
	Self    string          `json:"self"`
	Members []ClusterMember `json:"members"`
}

func (n *Node) cluster() ClusterView {
	return ClusterView{Self: n.cfg.Name, Members: []ClusterMember{{
		Name: n.cfg.Name, Status: "alive", WS: n.WSURL(),
		Mesh: n.cfg.advertised(n.cfg.MeshAddr), Gossip: n.cfg.advertised(n.cfg.GossipAddr), Admin: n.AdminURL(),
	}}}
}

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(n.cluster())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	return mux
}
