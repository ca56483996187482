package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// probeLoad is the load of the peer-isolation tests: a probe stream of 400 publications/s from
// n2 to 50 subscribers on n1, whose latency is measured, and a flood of floodPer10ms × 16 KiB
// publications every 10 ms from n2 to one subscriber on n3.
type probeLoad struct {
	t       *testing.T
	mu      sync.Mutex
	samples []probeSample
	probes  atomic.Int64
	flooded atomic.Int64
	stopCh  chan struct{}
	wg      sync.WaitGroup
}

type probeSample struct {
	sent time.Time
	lat  time.Duration
}

const probeSubscribers = 50

func startProbeLoad(t *testing.T, nodes []*harness.Node, floodPer10ms int) *probeLoad {
	t.Helper()
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	pl := &probeLoad{t: t, stopCh: make(chan struct{})}
	for range probeSubscribers {
		if err := dial(t, n1.URL()).Subscribe(ctx, "probe", func(_ string, data json.RawMessage) {
			var m struct{ T int64 }
			if json.Unmarshal(data, &m) != nil {
				return
			}
			now := time.Now()
			pl.mu.Lock()
			pl.samples = append(pl.samples, probeSample{time.Unix(0, m.T), now.Sub(time.Unix(0, m.T))})
			pl.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := dial(t, n3.URL()).Subscribe(ctx, "flood", func(string, json.RawMessage) { pl.flooded.Add(1) }); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, "n1", 1)
	waitWanted(t, nodes, "n3", 1)
	probe := dial(t, n2.URL())
	flood := dial(t, n2.URL())
	big := json.RawMessage(`"` + strings.Repeat("f", 16<<10) + `"`)
	pl.wg.Add(2)
	go func() { // 400/s
		defer pl.wg.Done()
		tick := time.NewTicker(2500 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-pl.stopCh:
				return
			case <-tick.C:
				if probe.PublishRaw("probe", json.RawMessage(fmt.Sprintf(`{"t":%d}`, time.Now().UnixNano()))) == nil {
					pl.probes.Add(1)
				}
			}
		}
	}()
	go func() {
		defer pl.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pl.stopCh:
				return
			case <-tick.C:
				for range floodPer10ms {
					_ = flood.PublishRaw("flood", big)
				}
			}
		}
	}()
	return pl
}

// stop ends both streams and waits until every probe sent was delivered to every subscriber.
func (pl *probeLoad) stop() {
	pl.t.Helper()
	close(pl.stopCh)
	pl.wg.Wait()
	want := pl.probes.Load() * probeSubscribers
	harness.Eventually(pl.t, 10*time.Second, "every probe delivered", func() error {
		pl.mu.Lock()
		n := int64(len(pl.samples))
		pl.mu.Unlock()
		if n != want {
			return fmt.Errorf("%d of %d probe deliveries", n, want)
		}
		return nil
	})
}

// p99 of the probes sent in [from, to), and how many there were.
func (pl *probeLoad) p99(from, to time.Time) (time.Duration, int) {
	pl.mu.Lock()
	var lats []time.Duration
	for _, s := range pl.samples {
		if !s.sent.Before(from) && s.sent.Before(to) {
			lats = append(lats, s.lat)
		}
	}
	pl.mu.Unlock()
	if len(lats) == 0 {
		return 0, 0
	}
	slices.Sort(lats)
	return lats[len(lats)*99/100], len(lats)
}
