// Package scale measures how far sockmesh scales (make scale, docs/scaling.md): clusters of
// 4 to 32 real sockmesh processes, one network namespace each where root is available, and
// (connections_test.go) 100,000 connections on one node. The measurements run only when
// SOCKMESH_SCALE=1 (make scale sets it): they take minutes and the whole machine.
package scale

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func enabled(t *testing.T) {
	t.Helper()
	if os.Getenv("SOCKMESH_SCALE") != "1" {
		t.Skip("scale measurements run with SOCKMESH_SCALE=1 (make scale)")
	}
}

func intsFromEnv(name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// writeJSON writes v to $SCALE_OUT/name (default docs/scale/name).
func writeJSON(t *testing.T, name string, v any) {
	t.Helper()
	dir := os.Getenv("SCALE_OUT")
	if dir == "" {
		dir = filepath.Join("..", "..", "docs", "scale")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", filepath.Join(dir, name))
}

// Machine describes where the numbers were taken.
type Machine struct {
	When  string `json:"when"`
	CPU   string `json:"cpu"`
	Cores int    `json:"cores"`
	MemGB int    `json:"mem_gib"`
	Linux string `json:"kernel"`
}

func machine() Machine {
	m := Machine{When: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") && m.CPU == "" {
				m.CPU = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
			}
			if strings.HasPrefix(l, "processor") {
				m.Cores++
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			kb, _ := strconv.Atoi(f[1])
			m.MemGB = (kb + 1<<19) >> 20
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Linux = strings.TrimSpace(string(b))
	}
	return m
}

// TestClusterSizes: every cluster measurement at 4, 8, 16 and 32 nodes (SCALE_NODES), the
// interest table at 10,000 and 100,000 channels (SCALE_CHANNELS).
func TestClusterSizes(t *testing.T) {
	enabled(t)
	out := struct {
		Machine  Machine         `json:"machine"`
		Clusters []ClusterResult `json:"clusters"`
	}{Machine: machine()}
	for _, n := range intsFromEnv("SCALE_NODES", []int{4, 8, 16, 32}) {
		ok := t.Run(strconv.Itoa(n)+"_nodes", func(t *testing.T) {
			out.Clusters = append(out.Clusters, measureCluster(t, n, intsFromEnv("SCALE_CHANNELS", []int{10000, 100000})))
		})
		if !ok {
			break
		}
	}
	writeJSON(t, "cluster.json", out)
}
