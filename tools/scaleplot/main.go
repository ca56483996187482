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
		RSSMiB         float64 `json:"rss_mib"`
		FailDetectS    float64 `json:"fail_detect_s"`
		FailDetectP50S float64 `json:"fail_detect_p50_s"`
		Interest       []struct {
			Channels    int     `json:"channels"`
			SyncS       float64 `json:"sync_s"`
			RSSDeltaMiB float64 `json:"rss_delta_mib"`
		} `json:"interest"`
		PublishCost []struct {
			Interested int     `json:"interested_nodes"`
			NodeUs     float64 `json:"publisher_node_cpu_us_per_msg"`
			ClusterUs  float64 `json:"cluster_cpu_us_per_msg"`
		} `json:"publish_cost"`
	} `json:"clusters"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: scaleplot DIR (holding cluster.json)")
		os.Exit(2)
	}
	dir := os.Args[1]
	if err := clusterPlots(dir); err != nil {
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

func clusterPlots(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return err
	}
	var f clusterFile
	if err := json.Unmarshal(b, &f); err != nil {
		return err
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
			return err
		}
	}
	return nil
}
