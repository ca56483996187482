package wsfront

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The window turns on at WriteDelayLoad and off again only below two thirds of it.
func TestLoadMeterHysteresis(t *testing.T) {
	l := newLoadMeter(0.75)
	for i, step := range []struct {
		share float64
		busy  bool
	}{{0.2, false}, {0.74, false}, {0.75, true}, {0.6, true}, {0.51, true}, {0.49, false}, {0.7, false}, {0.9, true}} {
		l.observe(step.share)
		if l.busy.Load() != step.busy {
			t.Fatalf("step %d (share %.2f): busy %v, want %v", i, step.share, l.busy.Load(), step.busy)
		}
	}
}

// On a node that is not busy, a connection written a moment ago gets its next publication at
// once, not at the end of the write window: at 50 publications/s to 1,000 subscribers every
// connection is "busy", and the window put 20 ms on every delivery.
func TestIdleNodeWritesWithoutTheWindow(t *testing.T) {
	const delay = 400 * time.Millisecond
	// A load the test process never reaches, so that a loaded CI machine cannot turn the
	// window on behind the test's back; the meter's own threshold is TestLoadMeterHysteresis's.
	srv, url := startFront(t, Config{WriteDelay: delay, WriteDelayLoad: 1e9})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	for i := range 5 {
		start := time.Now()
		srv.broker.Publish("a", json.RawMessage(`1`))
		m, err := c.next()
		if err != nil || !strings.Contains(m, `"data":1}`) {
			t.Fatalf("publication %d: %s %v", i, m, err)
		}
		if took := time.Since(start); took > delay/2 {
			t.Fatalf("publication %d on a connection written %d times already took %v: the window applied on an idle node", i, i, took)
		}
	}
	// Forced on (a loaded node), the window applies.
	srv.load.busy.Store(true)
	start := time.Now()
	srv.broker.Publish("a", json.RawMessage(`2`))
	if _, err := c.next(); err != nil || time.Since(start) < delay/2 {
		t.Fatalf("busy node: the publication came after %v (%v), want the window", time.Since(start), err)
	}
}
