package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// One publication in latencySample per shard has its publish-to-write time observed, by
// origin; the per-peer mesh gauges are present (no peers here: no series, no error).
func TestPublishToWriteLatencySampled(t *testing.T) {
	n := startTestNode(t)
	defer n.Shutdown(context.Background())
	ws := wsClient(t, n.WSURL(), "lat")
	defer ws.Close()
	const pubs = 4 * latencySample
	go func() {
		for i := 0; i < pubs; i++ {
			_ = n.Publish("lat", json.RawMessage(fmt.Sprint(i)))
		}
	}()
	got := 0
	for got < pubs {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d publications: %v", got, err)
		}
		got += strings.Count(string(m), `"#publish"`)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		h := histogramCount(t, n, "local")
		if h >= 1 || time.Now().After(deadline) {
			if h < 1 {
				t.Fatalf("publish-to-write histogram has %d samples after %d publications", h, pubs)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := n.reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

func histogramCount(t *testing.T, n *Node, origin string) uint64 {
	t.Helper()
	return findMetric(t, n, "sockmesh_publish_to_write_seconds", map[string]string{"origin": origin}).GetHistogram().GetSampleCount()
}

// findMetric is the sample of the metric name whose labels include want (nil if none).
func findMetric(t *testing.T, n *Node, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metrics
				}
			}
			return m
		}
	}
	return nil
}
