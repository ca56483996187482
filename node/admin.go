package node

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sockmesh/sockmesh/adminguard"
	"github.com/sockmesh/sockmesh/mesh"
)

// Cluster is the body of /cluster: the mesh's view of the cluster (members with status and
// endpoints, per-peer link state, last heartbeat, channels wanted, counters) plus this
// node's local channel count.
type Cluster struct {
	mesh.Status
	LocalChannels int `json:"local_channels"`
	Connections   int `json:"connections"`
}

// Cluster returns what /cluster shows.
func (n *Node) Cluster() Cluster {
	return Cluster{Status: n.mesh.Status(), LocalChannels: len(n.broker.Channels()), Connections: len(n.front.Sockets())}
}

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !n.mesh.Ready() {
			http.Error(w, "not ready: not joined, or links to alive peers not all up", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(n.Cluster())
	})
	n.api.RegisterLocal(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	if n.cfg.Pprof {
		// Profiles cost CPU on demand: only when asked for (--pprof), behind the guard.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return n.withUI(mux)
}

// newAdminGuard is the admin listener's door (adminguard): the probes stay open, everything
// else needs the admin token or the API key when either is configured.
func (n *Node) newAdminGuard() (*adminguard.Guard, error) {
	cfg := adminguard.Config{Token: n.cfg.AdminToken, Open: []string{"/healthz", "/readyz"},
		AllowOrigins: n.cfg.AdminAllowOrigins, Page: "/ui"}
	if n.cfg.APIKey != "" {
		cfg.Also = n.api.Authorized
	}
	return adminguard.New(cfg)
}
