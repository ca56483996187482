package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// TestSlowPeerDoesNotSlowOthers (issue 16, scenario 2): three nodes; a probe stream of 400
// publications/s from n2 to 50 subscribers on n1, and a flood of 2,000 × 16 KiB publications/s
// from n2 to one subscriber on n3. Then n3 is slowed but alive: SIGSTOP 1.5 s / SIGCONT 0.25 s
// in a loop. The probe's p99 must stay within max(3×, +50 ms) of its p99 with n3 healthy, with
// nothing lost. Before, zmq4's single PUB writer waited on n3 for everyone: 31 ms → 2,785 ms.
func TestSlowPeerDoesNotSlowOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("about 20 s of load")
	}
	nodes := startCluster(t, 3, "--send-queue", "1GiB", "--publish-rate", "-1")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()

	type sample struct {
		sent time.Time
		lat  time.Duration
	}
	var mu sync.Mutex
	var samples []sample
	const subs = 50
	for range subs {
		if err := dial(t, n1.URL()).Subscribe(ctx, "probe", func(_ string, data json.RawMessage) {
			var m struct{ T int64 }
			if json.Unmarshal(data, &m) != nil {
				return
			}
			now := time.Now()
			mu.Lock()
			samples = append(samples, sample{time.Unix(0, m.T), now.Sub(time.Unix(0, m.T))})
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	var flooded atomic.Int64
	if err := dial(t, n3.URL()).Subscribe(ctx, "flood", func(string, json.RawMessage) { flooded.Add(1) }); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, "n1", 1)
	waitWanted(t, nodes, "n3", 1)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var probes atomic.Int64
	probe := dial(t, n2.URL())
	wg.Add(2)
	go func() { // 400/s
		defer wg.Done()
		tick := time.NewTicker(2500 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if probe.PublishRaw("probe", json.RawMessage(fmt.Sprintf(`{"t":%d}`, time.Now().UnixNano()))) == nil {
					probes.Add(1)
				}
			}
		}
	}()
	flood := dial(t, n2.URL())
	big := json.RawMessage(`"` + strings.Repeat("f", 16<<10) + `"`)
	go func() { // 2,000 × 16 KiB /s, in bursts of 20 every 10 ms
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for range 20 {
					_ = flood.PublishRaw("flood", big)
				}
			}
		}
	}()

	p99 := func(from, to time.Time) (time.Duration, int) {
		mu.Lock()
		var lats []time.Duration
		for _, s := range samples {
			if !s.sent.Before(from) && s.sent.Before(to) {
				lats = append(lats, s.lat)
			}
		}
		mu.Unlock()
		if len(lats) == 0 {
			return 0, 0
		}
		slices.Sort(lats)
		return lats[len(lats)*99/100], len(lats)
	}
	time.Sleep(2 * time.Second) // warm-up
	h0 := time.Now()
	time.Sleep(6 * time.Second)
	h1 := time.Now()
	// n3 slowed but alive.
	cycle := make(chan struct{})
	go func() {
		defer close(cycle)
		for end := time.Now().Add(7 * time.Second); time.Now().Before(end); {
			n3.Signal(syscall.SIGSTOP)
			time.Sleep(1500 * time.Millisecond)
			n3.Signal(syscall.SIGCONT)
			time.Sleep(250 * time.Millisecond)
		}
	}()
	time.Sleep(250 * time.Millisecond)
	s0 := time.Now()
	time.Sleep(6 * time.Second)
	s1 := time.Now()
	<-cycle
	n3.Signal(syscall.SIGCONT)
	close(stop)
	wg.Wait()
	want := probes.Load() * subs
	harness.Eventually(t, 10*time.Second, "every probe delivered", func() error {
		mu.Lock()
		n := int64(len(samples))
		mu.Unlock()
		if n != want {
			return fmt.Errorf("%d of %d probe deliveries", n, want)
		}
		return nil
	})
	healthy, hn := p99(h0, h1)
	slowed, sn := p99(s0, s1)
	slowCuts, _ := n2.Metric("sockmesh_mesh_slow_peers_total", `peer="n3"`)
	t.Logf("probe p99: n3 healthy %v (%d deliveries), n3 slowed %v (%d deliveries); flood delivered on n3: %d; n3 cut as slow by n2: %v times",
		healthy.Round(time.Millisecond), hn, slowed.Round(time.Millisecond), sn, flooded.Load(), slowCuts)
	if bound := max(3*healthy, healthy+50*time.Millisecond); slowed > bound {
		t.Fatalf("probe p99 with n3 slowed is %v, above max(3×, +50 ms) of %v = %v", slowed, healthy, bound)
	}
	if gaps, _ := n1.Metric("sockmesh_mesh_gaps_total", `peer="n2"`); gaps != 0 {
		t.Fatalf("n1 counted %v gaps from n2", gaps)
	}
}
