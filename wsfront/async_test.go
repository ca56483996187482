package wsfront

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// An invoke flood on an asynchronous handler that takes its time (the demo's serverInvoke
// waits on the client) keeps at most MaxAsyncInvokes running per connection: the rest are
// answered with TooManyPendingInvokesError at once, and goroutines stay flat. Before, 10,000
// invokes made 10,000 goroutines (the issue measured 50,000 and 397 MB).
func TestAsyncInvokesAreBounded(t *testing.T) {
	srv, url := startFront(t, Config{MaxAsyncInvokes: 8, Limits: Limits{EventRate: -1}})
	release := make(chan struct{})
	srv.HandleInvoke("slow", func(_ context.Context, inv *Invocation) (any, error) {
		inv.Async(func() (any, error) {
			<-release
			return "done", nil
		})
		return nil, nil
	})
	c := dialRaw(t, url)
	c.handshake()
	before := runtime.NumGoroutine()
	const n = 10_000
	var burst strings.Builder
	for i := range n {
		fmt.Fprintf(&burst, `{"event":"slow","cid":%d}`, i+2)
		if i%100 == 99 {
			c.send("[" + strings.ReplaceAll(burst.String(), "}{", "},{") + "]")
			burst.Reset()
		}
	}
	refused := 0
	for refused < n-8 {
		m, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(m, "TooManyPendingInvokesError") {
			t.Fatalf("answer before the slow handlers finished: %s", m)
		}
		refused++
	}
	if g := runtime.NumGoroutine(); g > before+8+10 {
		t.Fatalf("%d goroutines after %d asynchronous invokes (%d before)", g, n, before)
	}
	if r := testutil.ToFloat64(srv.cfg.Metrics.Events.WithLabelValues("async_refused")); r != n-8 {
		t.Fatalf("%v refused counted, want %d", r, n-8)
	}
	close(release)
	for range 8 {
		if m, err := c.next(); err != nil || !strings.Contains(m, `"data":"done"`) {
			t.Fatalf("a running invoke's answer: %s %v", m, err)
		}
	}
	// The slots are free again.
	c.send(`{"event":"slow","cid":99999}`)
	if m, err := c.next(); err != nil || !strings.Contains(m, `"rid":99999,"data":"done"`) {
		t.Fatalf("an invoke after the flood: %s %v", m, err)
	}
}
