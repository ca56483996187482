package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sockmesh/sockmesh/node"
)

// runCluster prints a node's /cluster view as tables: members, then links from peers.
func runCluster(args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	admin := fs.String("admin", envOr("SOCKMESH_ADMIN", "http://127.0.0.1:8001"), "admin base URL of any node")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	token := fs.String("admin-token", "", "the node's --admin-token (env SOCKMESH_ADMIN_TOKEN; or the API key in SOCKMESH_API_KEY)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	url := strings.TrimRight(*admin, "/")
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	resp, err := adminClient(*token, "").Get(url + "/cluster")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/cluster: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err = os.Stdout.Write(body)
		return err
	}
	var v node.Cluster
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s/cluster: %w", url, err)
	}
	printCluster(os.Stdout, v)
	return nil
}

func printCluster(out io.Writer, v node.Cluster) {
	ready := "not ready"
	if v.Ready {
		ready = "ready"
	}
	fmt.Fprintf(out, "node %s (%s), %d connections, %d local channels, %d channels announced (version %d)\n\n",
		v.Self, ready, v.Connections, v.LocalChannels, v.Channels, v.InterestVersion)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MEMBER\tSTATUS\tWS\tMESH\tGOSSIP\tADMIN")
	for _, m := range v.Members {
		name := m.Name
		if name == v.Self {
			name += " (self)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Status, m.WS, m.Mesh, m.Gossip, m.Admin)
	}
	w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PEER\tLINK\tLAST HEARTBEAT\tWANTS\tSENT\tRECEIVED\tGAPS\tDROPPED\tQUEUED\tRECONNECTS")
	for _, p := range v.Peers {
		hb := "never"
		if !p.LastHeartbeat.IsZero() {
			hb = time.Since(p.LastHeartbeat).Round(time.Millisecond).String() + " ago"
		}
		wants := fmt.Sprint(p.Channels)
		if !p.InterestSynced {
			wants += " (syncing)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", p.Name, p.Link, hb, wants, p.Sent, p.Received, p.Gaps, p.Dropped, p.Queued, p.Reconnects)
	}
	w.Flush()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
