package node

import (
	"embed"
	"io/fs"
	"net/http"
)

// uiFiles is the status page: static assets only, no external network, no build step. The
// page polls /cluster and /metrics of this node and of every member (through the members'
// admin URLs) and draws the cluster.
//
//go:embed ui/index.html ui/app.js ui/style.css
var uiFiles embed.FS

// withUI adds the status page (/ui) to the admin mux and returns the admin handler. The page
// on one node's admin port reads the other nodes' /cluster and /metrics: their
// --admin-allow-origins must list this node's admin origin (see adminguard).
func (n *Node) withUI(mux *http.ServeMux) http.Handler {
	sub, _ := fs.Sub(uiFiles, "ui")
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	mux.Handle("GET /ui/", files)
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, sub, "index.html")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			switch r.URL.Path {
			case "/ui", "/ui/", "/ui/index.html", "/ui/app.js", "/ui/style.css":
				w.Header().Set("Cache-Control", "no-cache")
			}
		}
		mux.ServeHTTP(w, r)
	})
}
