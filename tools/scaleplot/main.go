// Command scaleplot draws the plots of docs/scaling.md from the JSON that `make scale` writes
// (docs/scale/cluster.json, docs/scale/connections.json) into SVG files beside them. It is a
// module of its own so that the plotting library never enters the server's dependencies.
//
//	go run . ../../docs/scale
package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

type clusterFile struct {
	Machine struct {
		When  string `json:"when"`
		CPU   string `json:"cpu"`
		Cores int    `json:"cores"`
	} `json:"machine"`
	Clusters []struct {
		Nodes          int     `json:"nodes"`
		JoinS          float64 `json:"join_s"`
		SubLiveP50     float64 `json:"sub_live_p50_ms"`
		SubLiveP99     float64 `json:"sub_live_p99_ms"`
		IdleCPU        float64 `json:"idle_cpu_pct"`
		GossipBytes    float64 `json:"gossip_bytes_per_s"`
		MeshBytes      float64 `json:"mesh_idle_bytes_per_s"`
		ActiveMesh     float64 `json:"mesh_active_bytes_per_s"`
		Isolation      string  `json:"isolation"`
		IdleCPUMax     float64 `json:"idle_cpu_max_pct"`
		SubLiveMax     float64 `json:"sub_live_max_ms"`
		SubLiveTries   int     `json:"sub_live_tries"`
		RouteExpected  int     `json:"route_expected"`
		RouteDelivered int     `json:"route_delivered"`
		RSSMiB         float64 `json:"rss_mib"`
		FailDetectS    float64 `json:"fail_detect_s"`
		FailDetectP50S float64 `json:"fail_detect_p50_s"`
		Interest       []struct {
			Channels    int     `json:"channels"`
			SyncS       float64 `json:"sync_s"`
			RSSDeltaMiB float64 `json:"rss_delta_mib"`
			PerEntry    float64 `json:"bytes_per_entry"`
			Bytes       float64 `json:"interest_bytes"`
		} `json:"interest"`
		PublishCost []struct {
			Interested int     `json:"interested_nodes"`
			NodeUs     float64 `json:"publisher_node_cpu_us_per_msg"`
			ClusterUs  float64 `json:"cluster_cpu_us_per_msg"`
			Delivered  int     `json:"delivered"`
			Expected   int     `json:"expected"`
		} `json:"publish_cost"`
	} `json:"clusters"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: scaleplot DIR (holding cluster.json)")
		os.Exit(2)
	}
	dir := os.Args[1]
	f, err := clusterPlots(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scaleplot:", err)
		os.Exit(1)
	}
	// docs/scaling.md holds the tables between markers; they are rewritten from the JSON so
	// that the text and the last run never disagree.
	doc := filepath.Join(dir, "..", "scaling.md")
	if err := rewriteTables(doc, f, readConnections(dir)); err != nil {
		fmt.Fprintln(os.Stderr, "scaleplot:", err)
		os.Exit(1)
	}
}

// series is one line: points (x, y) named for the legend.
type series struct {
	name string
	pts  plotter.XYs
}

func save(dir, file, title, xl, yl string, lines ...series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xl
	p.Y.Label.Text = yl
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	for i, s := range lines {
		l, pts, err := plotter.NewLinePoints(s.pts)
		if err != nil {
			return err
		}
		c := plotutil.Color(i)
		l.Color, pts.Color = c, c
		l.Width = vg.Points(1.5)
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		if s.name != "" {
			p.Legend.Add(s.name, l, pts)
		}
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.BackgroundColor = color.White
	out := filepath.Join(dir, file)
	if err := p.Save(6*vg.Inch, 3.6*vg.Inch, out); err != nil {
		return err
	}
	fmt.Println("wrote", out)
	return nil
}

func clusterPlots(dir string) (*clusterFile, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return nil, err
	}
	var f clusterFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	var join, fail, failMed, live50, live99, cpu, gossip, meshB, rss series
	join.name, fail.name, failMed.name = "start to joined and linked", "kill -9 to failed everywhere", "kill -9 to failed (median node)"
	live50.name, live99.name = "p50", "p99"
	gossip.name, meshB.name = "gossip (TCP+UDP)", "mesh (heartbeats, idle)"
	interest := map[int]*series{}
	cost := map[int]*series{}
	var costOrder, interestOrder []int
	for _, c := range f.Clusters {
		x := float64(c.Nodes)
		join.pts = append(join.pts, plotter.XY{X: x, Y: c.JoinS})
		fail.pts = append(fail.pts, plotter.XY{X: x, Y: c.FailDetectS})
		failMed.pts = append(failMed.pts, plotter.XY{X: x, Y: c.FailDetectP50S})
		live50.pts = append(live50.pts, plotter.XY{X: x, Y: c.SubLiveP50})
		live99.pts = append(live99.pts, plotter.XY{X: x, Y: c.SubLiveP99})
		cpu.pts = append(cpu.pts, plotter.XY{X: x, Y: c.IdleCPU})
		gossip.pts = append(gossip.pts, plotter.XY{X: x, Y: c.GossipBytes / 1024})
		meshB.pts = append(meshB.pts, plotter.XY{X: x, Y: c.MeshBytes / 1024})
		rss.pts = append(rss.pts, plotter.XY{X: x, Y: c.RSSMiB})
		for _, in := range c.Interest {
			s := interest[in.Channels]
			if s == nil {
				s = &series{name: fmt.Sprintf("%d channels", in.Channels)}
				interest[in.Channels] = s
				interestOrder = append(interestOrder, in.Channels)
			}
			s.pts = append(s.pts, plotter.XY{X: x, Y: in.RSSDeltaMiB})
		}
		s := &series{name: fmt.Sprintf("%d nodes", c.Nodes)}
		for _, pc := range c.PublishCost {
			s.pts = append(s.pts, plotter.XY{X: float64(pc.Interested), Y: pc.ClusterUs})
		}
		cost[c.Nodes] = s
		costOrder = append(costOrder, c.Nodes)
	}
	machine := fmt.Sprintf(" (%d cores)", f.Machine.Cores)
	steps := []error{
		save(dir, "membership.svg", "Joining and failure detection"+machine, "nodes", "seconds", join, fail, failMed),
		save(dir, "subscription-live.svg", "New subscription hears every node", "nodes", "ms", live50, live99),
		save(dir, "idle-cpu.svg", "Idle CPU per node", "nodes", "% of one core", cpu),
		save(dir, "idle-traffic.svg", "Bytes sent per node while idle", "nodes", "KiB/s", gossip, meshB),
		save(dir, "idle-rss.svg", "Memory per node, idle", "nodes", "MiB", rss),
	}
	var in []series
	for _, k := range interestOrder {
		in = append(in, *interest[k])
	}
	steps = append(steps, save(dir, "interest-memory.svg", "Interest table: memory per node", "nodes", "MiB above idle", in...))
	var co []series
	for _, k := range costOrder {
		co = append(co, *cost[k])
	}
	steps = append(steps, save(dir, "publish-cost.svg", "CPU per publication, whole cluster", "nodes with a subscriber", "µs", co...))
	for _, err := range steps {
		if err != nil {
			return nil, err
		}
	}
	return &f, nil
}

// connFile is docs/scale/connections.json (only what the tables show).
type connFile struct {
	Hold []struct {
		Connections     int     `json:"connections"`
		ConnectsPerSec  float64 `json:"connects_per_s"`
		ConnectErrors   int     `json:"connect_errors"`
		MemPerConnKiB   float64 `json:"mem_per_conn_kib"`
		RSSBefore       float64 `json:"server_rss_before_mib"`
		RSS             float64 `json:"server_rss_mib"`
		RSSEnd          float64 `json:"server_rss_end_mib"`
		HoldDisconnects *int    `json:"hold_disconnects"`
		PingsAnswered   int64   `json:"pings_answered"`
		FanoutDelivered *int64  `json:"fanout_delivered"`
		FanoutFirstMs   float64 `json:"fanout_first_ms"`
		FanoutAllMs     float64 `json:"fanout_all_ms"`
		FanoutCPUMs     float64 `json:"fanout_server_cpu_ms"`
		DurationSec     float64 `json:"duration_s"`
	} `json:"hold"`
	Traffic []struct {
		Summary     bool    `json:"summary"`
		Connections int     `json:"connections"`
		PublishRate float64 `json:"pub_per_s"`
		Delivered   float64 `json:"delivered_per_s"`
		Lost        int64   `json:"lost"`
		P50         float64 `json:"lat_p50_ms"`
		P99         float64 `json:"lat_p99_ms"`
		CPU         float64 `json:"server_cpu_pct"`
	} `json:"traffic"`
}

func readConnections(dir string) *connFile {
	b, err := os.ReadFile(filepath.Join(dir, "connections.json"))
	if err != nil {
		return nil
	}
	var c connFile
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	return &c
}

const beginMark, endMark = "<!-- scale:tables (written by make scale) -->", "<!-- /scale:tables -->"

// rewriteTables replaces what stands between the markers of doc with tables of f and c.
func rewriteTables(doc string, f *clusterFile, c *connFile) error {
	b, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q section", doc, beginMark, endMark)
	}
	var w strings.Builder
	fmt.Fprintf(&w, "%s\n\nRun of %s on %s, %d cores.\n\n", beginMark, f.Machine.When, f.Machine.CPU, f.Machine.Cores)
	w.WriteString("| nodes | network | joined and linked | routing all-to-all | new subscription hears every node p50 / p99 / max | kill -9 seen failed (all / median) | idle CPU per node (max) | idle RSS | gossip sent | mesh sent idle | mesh sent, every link active |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range f.Clusters {
		fmt.Fprintf(&w, "| %d | %s | %.1f s | %d of %d | %.1f / %.1f / %.1f ms (%d tries) | %.2f / %.2f s | %.1f %% (%.1f) | %.1f MiB | %.1f KiB/s | %.1f KiB/s | %.1f KiB/s |\n",
			x.Nodes, x.Isolation, x.JoinS, x.RouteDelivered, x.RouteExpected, x.SubLiveP50, x.SubLiveP99, x.SubLiveMax, x.SubLiveTries,
			x.FailDetectS, x.FailDetectP50S, x.IdleCPU, x.IdleCPUMax, x.RSSMiB, x.GossipBytes/1024, x.MeshBytes/1024, x.ActiveMesh/1024)
	}
	w.WriteString("\n**Interest table** (channels subscribed evenly over the nodes, one subscriber each; every node then holds every channel: its own with their subscribers, the others' as remote interest):\n\n| nodes | channels | known cluster-wide after | RSS per node above idle | per channel | interest bytes sent per node |\n|---|---|---|---|---|---|\n")
	for _, x := range f.Clusters {
		for _, in := range x.Interest {
			fmt.Fprintf(&w, "| %d | %d | %.2f s | %.1f MiB | %.0f B | %.0f KiB |\n", x.Nodes, in.Channels, in.SyncS, in.RSSDeltaMiB, in.PerEntry, in.Bytes/1024)
		}
	}
	w.WriteString("\n**Publish cost** (a publisher on one node at 2,000 publications/s of 100 bytes for 4 s, one subscriber on each of k other nodes; CPU above each node's idle use, clients included):\n\n| nodes | k | publisher's node µs/publication | whole cluster µs/publication | delivered |\n|---|---|---|---|---|\n")
	for _, x := range f.Clusters {
		for _, pc := range x.PublishCost {
			fmt.Fprintf(&w, "| %d | %d | %.0f | %.0f | %d of %d |\n", x.Nodes, pc.Interested, pc.NodeUs, pc.ClusterUs, pc.Delivered, pc.Expected)
		}
	}
	if c != nil && len(c.Hold) > 0 {
		w.WriteString("\n**Connections on one node** (`sockmesh bench --scenario hold`: the raw connector opens them from 127.0.0.x, each subscribes, all are held with every ping answered; halfway one publication to all):\n\n| connections | opened/s | errors | KiB per connection | RSS before / subscribed / end | disconnects in the hold | one publication to all: first / last delivery | server CPU for it | delivered |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, h := range c.Hold {
			disc, del := "?", "?"
			if h.HoldDisconnects != nil {
				disc = fmt.Sprint(*h.HoldDisconnects)
			}
			if h.FanoutDelivered != nil {
				del = fmt.Sprint(*h.FanoutDelivered)
			}
			fmt.Fprintf(&w, "| %d | %.0f | %d | %.2f | %.0f / %.0f / %.0f MiB | %s (%.0f s) | %.1f / %.1f ms | %.0f ms | %s |\n",
				h.Connections, h.ConnectsPerSec, h.ConnectErrors, h.MemPerConnKiB, h.RSSBefore, h.RSS, h.RSSEnd, disc, h.DurationSec, h.FanoutFirstMs, h.FanoutAllMs, h.FanoutCPUMs, del)
		}
	}
	if c != nil && len(c.Traffic) > 0 {
		w.WriteString("\n**The same node with traffic** (100 subscribers per channel, each publication to one channel at random; a ramp doubling the rate until p99 passes 100 ms or anything is lost):\n\n| connections | publications/s | delivered/s | lost | p50 | p99 | server CPU |\n|---|---|---|---|---|---|---|\n")
		for _, x := range c.Traffic {
			if x.Summary {
				continue
			}
			fmt.Fprintf(&w, "| %d | %.0f | %.0f | %d | %.1f ms | %.1f ms | %.0f %% |\n", x.Connections, x.PublishRate, x.Delivered, x.Lost, x.P50, x.P99, x.CPU)
		}
	}
	w.WriteString("\n" + endMark)
	s = s[:i] + w.String() + s[j+len(endMark):]
	return os.WriteFile(doc, []byte(s), 0o644)
}
