// Package pace admits bursts of work — new connections, recovery replays — at a rate that
// follows the process's own scheduling delay. A Gate admits its waiters first come, first
// served, at a rate that may change at any moment; a Governor watches how long runnable
// goroutines wait for a CPU (runtime/metrics) and scales its gates' rates down while that
// delay is above its target, and back up once it is well below. A fixed rate is either too
// low for a big machine or too high for a small one: the storm of 10,000 clients recovering
// on one core (integration/storm) raised other clients' p99 to 265-448 ms at 2,000
// handshakes and 20,000 replayed publications per second, which a larger machine takes
// without notice.
package pace

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrTooLong: the wait would be (or was) longer than the caller allows.
var ErrTooLong = errors.New("pace: the wait for a turn is longer than allowed")

// Gate admits waiters in arrival order at Rate() per second, letting 10 ms' worth through at
// once (one unit at least). The zero Gate is not usable; see NewGate.
type Gate struct {
	mu     sync.Mutex
	max    float64 // the configured rate
	factor float64 // the governor's share of it, (0, 1]
	tokens float64
	last   time.Time
	queue  []*waiter
	queued float64 // sum of the queue's n
	timer  *time.Timer
}

type waiter struct {
	n     float64
	ready chan struct{}
}

// NewGate returns a gate admitting up to rate units per second.
func NewGate(rate float64) *Gate {
	g := &Gate{max: rate, factor: 1, last: time.Now()}
	g.tokens = g.burst()
	return g
}

// Rate is the rate in force: the configured one times the governor's factor.
func (g *Gate) Rate() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max * g.factor
}

// SetFactor sets the share of the configured rate in force (the governor's).
func (g *Gate) SetFactor(f float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refill()
	g.factor = min(max(f, 1e-3), 1)
	g.tokens = min(g.tokens, g.burst())
	g.schedule()
}

func (g *Gate) burst() float64 { return max(1, g.max*g.factor/100) }

// refill adds what the rate earned since last; g.mu held.
func (g *Gate) refill() {
	now := time.Now()
	if d := now.Sub(g.last); d > 0 {
		g.tokens = min(g.tokens+d.Seconds()*g.max*g.factor, g.burst())
	}
	g.last = now
}

// TryTake admits n units now if nobody waits and the gate has them (never more than a burst).
func (g *Gate) TryTake(n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refill()
	if len(g.queue) > 0 || g.tokens < float64(n) {
		return false
	}
	g.tokens -= float64(n)
	return true
}

// Wait admits n units once the waiters before it have gone and the rate has earned them,
// at most a burst (10 ms' worth) at a time: a larger n queues again for each further burst, so
// that one large waiter does not take more than the rate either. It gives up with ErrTooLong
// at once when the queue ahead, at the rate in force, would take longer than most (0: no
// bound), or once it has waited that long; and with ctx's error when ctx ends first.
func (g *Gate) Wait(ctx context.Context, n int, most time.Duration) error {
	var timeout <-chan time.Time
	if most > 0 {
		t := time.NewTimer(most)
		defer t.Stop()
		timeout = t.C
	}
	for left := float64(n); left > 0; {
		g.mu.Lock()
		g.refill()
		take := min(left, g.burst())
		left -= take
		if len(g.queue) == 0 && g.tokens >= take {
			g.tokens -= take
			g.mu.Unlock()
			continue
		}
		if most > 0 && g.aheadLocked() > most {
			g.mu.Unlock()
			return ErrTooLong
		}
		w := &waiter{n: take, ready: make(chan struct{})}
		g.queue = append(g.queue, w)
		g.queued += w.n
		g.schedule()
		g.mu.Unlock()
		select {
		case <-w.ready:
		case <-ctx.Done():
			if g.leave(w) {
				return ctx.Err()
			}
		case <-timeout:
			if g.leave(w) {
				return ErrTooLong
			}
		}
	}
	return nil
}

// Return gives back n units taken but not used, to the waiters first (at most a burst is kept).
func (g *Gate) Return(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refill()
	g.tokens = min(g.tokens+float64(n), g.burst())
	g.admit()
}

// Ahead estimates how long a waiter arriving now would wait.
func (g *Gate) Ahead() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refill()
	return g.aheadLocked()
}

func (g *Gate) aheadLocked() time.Duration {
	return time.Duration((g.queued - g.tokens) / (g.max * g.factor) * float64(time.Second))
}

// Waiting is how many waiters the gate holds.
func (g *Gate) Waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// leave takes w out of the queue; false when it was admitted already.
func (g *Gate) leave(w *waiter) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, q := range g.queue {
		if q == w {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			g.queued -= w.n
			return true
		}
	}
	return false
}

// release admits the waiters the rate has earned and schedules the next release.
func (g *Gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refill()
	g.admit()
}

// admit lets through the waiters the tokens cover, in order, and schedules the next release;
// g.mu held.
func (g *Gate) admit() {
	for len(g.queue) > 0 && g.tokens >= min(g.queue[0].n, g.burst()) { // (the burst may have shrunk)
		w := g.queue[0]
		g.queue[0] = nil
		g.queue = g.queue[1:]
		g.queued -= w.n
		g.tokens -= w.n
		close(w.ready)
	}
	if len(g.queue) == 0 {
		g.queue = nil // the array of a long queue goes
	}
	g.schedule()
}

// schedule sets the timer for the head of the queue; g.mu held.
func (g *Gate) schedule() {
	if len(g.queue) == 0 {
		if g.timer != nil {
			g.timer.Stop()
		}
		return
	}
	need := min(g.queue[0].n, g.burst()) - g.tokens
	d := time.Duration(need / (g.max * g.factor) * float64(time.Second))
	// Whole bursts at a time: a wake-up per waiter would cost more than the waiters' work.
	d = max(d, time.Millisecond)
	// One timer for the gate's life, reset for each release: a storm's gate releases up to a
	// thousand times a second, and a timer each was a fifth of what a recovering survivor
	// allocated once the replays' own garbage had gone. A release that was already on its
	// way when the timer was reset finds the tokens not yet earned and only schedules again.
	if g.timer != nil {
		g.timer.Reset(d)
		return
	}
	g.timer = time.AfterFunc(d, g.release)
}
