package wsfront

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sockmesh/sockmesh/scproto"
)

// TestStuckSubscribersDoNotStallPublisher (issue 18, item 1): subscribers that stop reading
// must not hold up a publisher or the healthy subscribers of the same channel. A publisher
// sends 64 KiB with acknowledgement every 30 ms to a channel with one healthy subscriber and
// 0, 1 or 10 subscribers that never read (their receive buffers are small, so their
// connections fill within a second). The publisher's ack p99 and the healthy subscriber's
// delivery p99 with stuck subscribers stay within max(3×, +50 ms) of the run with none (100
// stuck with the default queue: cut as slow consumers meanwhile).
// Before, the publisher's reader wrote the idle subscribers' frames itself and waited on a
// full socket until the write timeout: ack max 9.97 s.
func TestStuckSubscribersDoNotStallPublisher(t *testing.T) {
	if testing.Short() {
		t.Skip("about 12 s of load")
	}
	run := func(stuck, queue int) (ack, deliver time.Duration) {
		srv, url := startFanoutFront(t, Config{WriteTimeout: 10 * time.Second, SendQueueBytes: queue})
		_ = srv
		for range stuck {
			stuckSubscriber(t, url, "x")
			// and never reads again
		}
		healthy := dialRaw(t, url)
		healthy.handshake()
		healthy.send(`{"event":"#subscribe","data":{"channel":"x"},"cid":2}`)
		healthy.expect(`{"rid":2}`)
		pub := dialRaw(t, url)
		pub.handshake()
		payload := strings.Repeat("p", 64<<10)
		sent := map[int]time.Time{}
		var acks, dels []time.Duration
		done := make(chan struct{})
		go func() { // the healthy subscriber reads everything
			defer close(done)
			for len(dels) < 100 {
				got, err := healthy.next()
				if err != nil {
					return
				}
				if i := strings.Index(got, `"n":`); i >= 0 {
					var n int
					fmt.Sscanf(got[i+4:], "%d", &n)
					var ts int64
					if j := strings.Index(got, `"t":`); j >= 0 {
						fmt.Sscanf(got[j+4:], "%d", &ts)
						dels = append(dels, time.Since(time.Unix(0, ts)))
					}
				}
			}
		}()
		for n := range 100 {
			data, _ := json.Marshal(map[string]any{"n": n, "t": time.Now().UnixNano(), "p": payload})
			sent[n] = time.Now()
			pub.send(fmt.Sprintf(`{"event":"#publish","data":{"channel":"x","data":%s},"cid":%d}`, data, 100+n))
			got, err := pub.next()
			if err != nil {
				t.Fatalf("%d stuck: the publisher's ack for publication %d did not come within 5 s: %v", stuck, n, err)
			}
			var rid int
			fmt.Sscanf(got[strings.Index(got, `"rid":`)+6:], "%d", &rid)
			acks = append(acks, time.Since(sent[rid-100]))
			time.Sleep(30 * time.Millisecond)
		}
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("healthy subscriber got %d of 100", len(dels))
		}
		p99 := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)*99/100] }
		return p99(acks), p99(dels)
	}
	baseAck, baseDel := run(0, 64<<20)
	t.Logf("none stuck: ack p99 %v, delivery p99 %v", baseAck, baseDel)
	// 1 and 10 stuck for the whole run (their queues hold 64 MiB); 100 stuck with the default
	// 1 MiB queue, so they are cut as slow consumers after about 16 publications.
	for _, c := range []struct{ stuck, queue int }{{1, 64 << 20}, {10, 64 << 20}, {100, 1 << 20}} {
		stuck := c.stuck
		ack, del := run(stuck, c.queue)
		t.Logf("%d stuck: ack p99 %v, delivery p99 %v", stuck, ack, del)
		if b := max(3*baseAck, baseAck+50*time.Millisecond); ack > b {
			t.Errorf("%d stuck subscribers: publisher's ack p99 %v, above max(3×, +50 ms) of %v", stuck, ack, baseAck)
		}
		if b := max(3*baseDel, baseDel+50*time.Millisecond); del > b {
			t.Errorf("%d stuck subscribers: healthy delivery p99 %v, above max(3×, +50 ms) of %v", stuck, del, baseDel)
		}
	}
}

// TestSlowConsumerGets4100: a subscriber whose send queue overflows is cut, counted, and gets
// close 4100 when its socket can still take the close frame, as the README and
// docs/compatibility.md promise (the chaos suite's stuck clients cannot take it: their kernel
// buffers are full, and they see the TCP cut instead).
func TestSlowConsumerGets4100(t *testing.T) {
	srv, url := startFanoutFront(t, Config{SendQueueBytes: 64 << 10})
	sub := dialRaw(t, url)
	sub.handshake()
	sub.send(`{"event":"#subscribe","data":{"channel":"x"},"cid":2}`)
	sub.expect(`{"rid":2}`)
	pub := dialRaw(t, url)
	pub.handshake()
	// One frame of 20 publications of 16 KiB: all are queued for the subscriber before anything
	// is written, 320 KiB against a 64 KiB queue.
	big := `"` + strings.Repeat("b", 16<<10) + `"`
	var packets []string
	for i := range 20 {
		packets = append(packets, fmt.Sprintf(`{"event":"#publish","data":{"channel":"x","data":%s},"cid":%d}`, big, 10+i))
	}
	pub.send("[" + strings.Join(packets, ",") + "]")
	if code := sub.closeCode(); code != scproto.CloseSlowConsumer {
		t.Fatalf("close code %d, want 4100", code)
	}
	if n := testutil.ToFloat64(srv.cfg.Metrics.SlowConsumers); n != 1 {
		t.Fatalf("%v slow consumers counted, want 1", n)
	}
}

// TestStuckSubscriberCutWithinWriteTimeout: a subscriber that stops reading, with a send queue
// large enough never to overflow, is cut once one write to it has waited --write-timeout, and
// counted; the publisher is not held up meanwhile.
func TestStuckSubscriberCutWithinWriteTimeout(t *testing.T) {
	srv, url := startFanoutFront(t, Config{WriteTimeout: time.Second, SendQueueBytes: 256 << 20})
	stuckSubscriber(t, url, "x")
	pub := dialRaw(t, url)
	pub.handshake()
	big := `"` + strings.Repeat("s", 64<<10) + `"`
	start := time.Now()
	var slowest time.Duration
	for i := 0; testutil.ToFloat64(srv.cfg.Metrics.WriteTimeouts) == 0; i++ {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the stuck subscriber was not cut within 10 s (write timeout 1 s)")
		}
		t0 := time.Now()
		pub.send(fmt.Sprintf(`{"event":"#publish","data":{"channel":"x","data":%s},"cid":%d}`, big, 10+i))
		pub.expect(fmt.Sprintf(`"rid":%d`, 10+i))
		slowest = max(slowest, time.Since(t0))
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("cut after %v; slowest publisher ack meanwhile %v", time.Since(start).Round(time.Millisecond), slowest.Round(time.Millisecond))
	if slowest > 500*time.Millisecond {
		t.Fatalf("the publisher waited %v for an ack while the subscriber was stuck", slowest)
	}
}

// stuckSubscriber connects with a 4 KiB receive buffer (its connection fills within a few
// frames), subscribes to ch and never reads again.
func stuckSubscriber(t *testing.T, url, ch string) {
	t.Helper()
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		return nd.Dial(network, addr)
	}}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &rawClient{t: t, ws: ws}
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"` + ch + `"},"cid":2}`)
	c.expect(`{"rid":2}`)
}
