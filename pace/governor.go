package pace

import (
	"math"
	"runtime/metrics"
	"sync"
	"time"
)

// schedLatencies is the runtime's histogram of how long goroutines waited as runnable before
// they ran: the delay every delivery, reply and ping of the process pays on top of its work.
const schedLatencies = "/sched/latencies:seconds"

// MinShare is the least share of its configured rate a governed gate keeps: however busy the
// process, a storm's connections and replays go on (at 2,000 handshakes a second, 100).
const MinShare = 0.05

// Governor scales its gates' rates by the process's scheduling delay: every Interval it takes
// the p99 of the delays since the last look; above Target twice in a row (or above twice the
// Target once) it lowers the share of the configured rates in force by Target/p99, by 30 %
// at least and by half at most (down to MinShare); below half of Target it raises it by 20 %
// (up to all of it). Work the gates hold back waits in their queues — a connection for its
// turn, a recovery for its replay — rather than in the run queue in front of every other
// client's messages.
type Governor struct {
	Target   time.Duration
	Interval time.Duration
	// OnChange, when set, is told the share and the p99 it was set for at every change.
	OnChange func(share float64, p99 time.Duration)

	mu     sync.Mutex
	gates  []*Gate
	share  float64
	over   bool // the last look was over Target
	sample []metrics.Sample
	prev   []uint64
	stop   chan struct{}
	done   chan struct{}
}

// NewGovernor returns a governor of the given target delay, looking every 100 ms.
func NewGovernor(target time.Duration) *Governor {
	return &Governor{Target: target, Interval: 100 * time.Millisecond, share: 1,
		sample: []metrics.Sample{{Name: schedLatencies}}}
}

// Govern adds a gate (nil is ignored).
func (g *Governor) Govern(gate *Gate) {
	if gate == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gates = append(g.gates, gate)
	gate.SetFactor(g.share)
}

// Share is the share of the configured rates in force.
func (g *Governor) Share() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.share
}

// Start looks at the delay every Interval until Stop.
func (g *Governor) Start() {
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	g.p99() // the baseline: the process's history before now is not this interval's
	go func() {
		defer close(g.done)
		t := time.NewTicker(g.Interval)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
				g.step(g.p99())
			}
		}
	}()
}

// Stop ends Start's loop and waits for it.
func (g *Governor) Stop() {
	if g.stop != nil {
		close(g.stop)
		<-g.done
	}
}

// step applies one look's p99 (negative: too few samples to judge, taken as idle).
func (g *Governor) step(p99 time.Duration) {
	g.mu.Lock()
	share := g.share
	over := p99 > g.Target
	switch {
	case over && (g.over || p99 > 2*g.Target):
		// Twice in a row, or far above: one look over the target is often a single burst
		// (the runtime's histogram has coarse buckets), and cutting the rates for it made a
		// storm's recovery take minutes.
		// The further over, the harder the cut (down to half a look): 10,000 clients of a
		// dead node admitted at 2,000/s built a 230 ms run queue on one core within half a
		// second, while cuts of 30 % a look took that long to halve the rate.
		share = max(share*min(max(float64(g.Target)/float64(p99), 0.5), 0.7), MinShare)
	case p99 < g.Target/2:
		share = min(share*1.2, 1)
	}
	g.over = over
	changed := share != g.share
	g.share = share
	gates := g.gates
	g.mu.Unlock()
	if !changed {
		return
	}
	for _, gate := range gates {
		gate.SetFactor(share)
	}
	if g.OnChange != nil {
		g.OnChange(share, p99)
	}
}

// p99 reads the histogram and returns the 99th percentile of what it counted since the last
// read (-1 with fewer than 10 samples, the runtime sampling one transition in 8: nothing to judge by).
func (g *Governor) p99() time.Duration {
	metrics.Read(g.sample)
	if g.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return -1
	}
	h := g.sample[0].Value.Float64Histogram()
	if len(g.prev) != len(h.Counts) {
		g.prev = make([]uint64, len(h.Counts))
		copy(g.prev, h.Counts)
		return -1
	}
	var total uint64
	for i, c := range h.Counts {
		total += c - g.prev[i]
	}
	defer copy(g.prev, h.Counts)
	if total < 10 {
		return -1
	}
	rank := total - total/100 // the sample at the 99th percentile, counted from the bottom
	var seen uint64
	for i, c := range h.Counts {
		seen += c - g.prev[i]
		if seen >= rank {
			up := h.Buckets[i+1] // the bucket's upper bound
			if math.IsInf(up, 1) {
				return time.Hour
			}
			return time.Duration(up * float64(time.Second))
		}
	}
	return -1
}
