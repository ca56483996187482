package wsfront

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sockmesh/sockmesh/scproto"
)

// TestHandlerPanicClosesOnlyThatSocket: a panic in an invoke handler, a transmit handler, a
// publish middleware or an Async function closes the connection it ran for with 1011, is
// counted, and the server keeps serving everyone else (before, it killed the process).
func TestHandlerPanicClosesOnlyThatSocket(t *testing.T) {
	srv, url := startFront(t, Config{})
	srv.HandleInvoke("boom", func(ctx context.Context, inv *Invocation) (any, error) { panic("invoke handler") })
	srv.HandleTransmit("boom", func(ctx context.Context, s *Socket, data json.RawMessage) { panic("transmit handler") })
	srv.HandleInvoke("asyncboom", func(ctx context.Context, inv *Invocation) (any, error) {
		inv.Async(func() (any, error) { panic("async function") })
		return nil, nil
	})
	srv.UsePublish(func(ctx context.Context, req *PublishRequest) error {
		if req.Channel == "boom" {
			panic("publish middleware")
		}
		return nil
	})
	healthy := dialRaw(t, url)
	healthy.handshake()
	healthy.send(`{"event":"#subscribe","data":{"channel":"ok"},"cid":2}`)
	healthy.expect(`{"rid":2}`)
	for i, bad := range []string{
		`{"event":"boom","data":1,"cid":2}`,
		`{"event":"boom","data":1}`,
		`{"event":"asyncboom","data":1,"cid":2}`,
		`{"event":"#publish","data":{"channel":"boom","data":1},"cid":2}`,
	} {
		c := dialRaw(t, url)
		c.handshake()
		c.send(bad)
		if code := c.closeCode(); code != scproto.CloseInternalError {
			t.Fatalf("%s: close code %d, want 1011", bad, code)
		}
		if n := testutil.ToFloat64(srv.cfg.Metrics.HandlerPanics); n != float64(i+1) {
			t.Fatalf("%s: %v panics counted, want %d", bad, n, i+1)
		}
		// Everyone else is served as before.
		pub := dialRaw(t, url)
		pub.handshake()
		pub.send(`{"event":"#publish","data":{"channel":"ok","data":"still here"},"cid":2}`)
		pub.expect(`{"rid":2}`)
		healthy.expect(`"still here"`)
	}
}

// TestAfterReplyAfterAsync: AfterReply called after Async (as a handler may well do) runs once
// the answer is queued, without a data race (go test -race reported one before).
func TestAfterReplyAfterAsync(t *testing.T) {
	srv, url := startFront(t, Config{})
	ran := make(chan string, 1)
	srv.HandleInvoke("slow", func(ctx context.Context, inv *Invocation) (any, error) {
		inv.Async(func() (any, error) { return "done", nil })
		time.Sleep(10 * time.Millisecond) // the async answer is ready before the handler returns
		inv.AfterReply(func() { ran <- "after" })
		return nil, nil
	})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"slow","data":1,"cid":2}`)
	got, err := c.next()
	if err != nil || !strings.Contains(got, `"rid":2`) || !strings.Contains(got, `"done"`) {
		t.Fatalf("answer %q %v", got, err)
	}
	select {
	case <-ran:
	case <-time.After(2 * time.Second):
		t.Fatal("the AfterReply registered after Async never ran")
	}
}
