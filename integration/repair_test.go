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

// TestRepairBurstDoesNotSlowOthers (issue 17): three nodes; a probe stream of 400
// publications/s from n2 to 50 subscribers on n1, and a flood of 1,000 × 16 KiB publications/s
// (16 MB/s) from n2 to one subscriber on n3. n3 is frozen for 20 s (SIGSTOP) while the flood
// goes on, so n2 keeps a full retransmission window for it (64 MiB, the newest ~4 s); at SIGCONT
// n3 asks for everything it missed and n2 retransmits the window. The probe's p99 while n3
// catches up must stay within max(3×, +50 ms) of its p99 with n3 healthy, with no probe lost,
// and n3 must really have been repaired.
func TestRepairBurstDoesNotSlowOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("about 35 s of load")
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
	go func() { // 1,000 × 16 KiB /s, in bursts of 10 every 10 ms
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for range 10 {
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
	time.Sleep(5 * time.Second)
	h1 := time.Now()
	n3.Signal(syscall.SIGSTOP)
	time.Sleep(20 * time.Second)
	cont := time.Now()
	n3.Signal(syscall.SIGCONT)
	time.Sleep(6 * time.Second) // the catch-up: 64 MiB at --mesh-repair-rate 32 MiB/s, and the re-link
	r1 := time.Now()
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
	repairing, rn := p99(cont, r1)
	repaired, _ := n3.Metric("sockmesh_mesh_repaired_messages_total", `peer="n2"`)
	beyond, _ := n3.Metric("sockmesh_mesh_unrepaired_messages_total", `peer="n2"`, `reason="beyond_window"`)
	retx, _ := n2.Metric("sockmesh_mesh_retransmitted_messages_total", `peer="n3"`)
	for _, reason := range []string{"overflow", "timeout", "restarted", "peer_gone"} {
		if v, _ := n3.Metric("sockmesh_mesh_unrepaired_messages_total", `peer="n2"`, `reason="`+reason+`"`); v > 0 {
			t.Logf("n3 gave up %v of n2's publications: %s", v, reason)
		}
	}
	dups, _ := n3.Metric("sockmesh_mesh_duplicate_messages_total", `peer="n2"`)
	t.Logf("n3 skipped %v duplicates from n2", dups)
	t.Logf("probe p99: n3 healthy %v (%d deliveries), n3 catching up %v (%d deliveries); n3 repaired %v of n2's publications (n2 retransmitted %v), %v lost beyond the window; flood delivered on n3: %d",
		healthy.Round(time.Millisecond), hn, repairing.Round(time.Millisecond), rn, repaired, retx, beyond, flooded.Load())
	if repaired < 1000 {
		t.Fatalf("n3 repaired only %v publications from n2: the catch-up this test is about did not happen", repaired)
	}
	if bound := max(3*healthy, healthy+50*time.Millisecond); repairing > bound {
		t.Fatalf("probe p99 while n3 catches up is %v, above max(3×, +50 ms) of %v = %v", repairing, healthy, bound)
	}
	if gaps, _ := n1.Metric("sockmesh_mesh_gaps_total", `peer="n2"`); gaps != 0 {
		t.Fatalf("n1 counted %v gaps from n2", gaps)
	}
}
