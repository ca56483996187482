//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/node"
	"github.com/sockmesh/sockmesh/wsfront"
)

// startPingingNode starts a node that pings every 50 ms and closes a client
// silent for 400 ms: a hold whose connections did not answer would lose them.
func startPingingNode(t *testing.T) *node.Node {
	t.Helper()
	return startNode(t, func(c *node.Config) {
		c.Front = wsfront.DefaultConfig()
		c.Front.PingInterval, c.Front.PingTimeout = 50*time.Millisecond, 400*time.Millisecond
	})
}

func TestHoldAgainstNode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ conns, channels int }{{300, 0}, {200, 7}} {
		t.Run(fmt.Sprintf("%d/%d", tc.conns, tc.channels), func(t *testing.T) {
			n := startPingingNode(t)
			res := runOne(t, Config{URLs: []string{n.WSURL()}, Scenario: "hold", Connections: tc.conns, ChannelsTotal: tc.channels,
				Concurrency: 50, PerSourceAddr: 100, Duration: 1500 * time.Millisecond, Drain: 2 * time.Second,
				ServerPIDs: []int{os.Getpid()}})
			r := res[0]
			k := max(tc.channels, 1)
			if r.Scenario != "hold" || r.Connections != tc.conns || r.Subscribers != tc.conns || r.Channels != k || r.ConnectErrors != 0 || r.Connector != "raw" {
				t.Fatalf("description: %+v", r)
			}
			if r.HoldDisconnects == nil || *r.HoldDisconnects != 0 || r.Disconnects != 0 {
				t.Fatalf("disconnects: %+v (warnings %q)", r, r.Warnings)
			}
			// 50 ms pings over 1.5 s: some 30 per connection; at least one each.
			if r.PingsAnswered < int64(tc.conns) {
				t.Fatalf("%d pings answered, want at least %d", r.PingsAnswered, tc.conns)
			}
			if r.FanoutDelivered == nil || *r.FanoutDelivered != int64(tc.conns) || r.FanoutReceivers != tc.conns ||
				r.Expected != int64(tc.conns) || r.Delivered != int64(tc.conns) || r.Lost != 0 {
				t.Fatalf("fan-out: %+v (warnings %q)", r, r.Warnings)
			}
			if !(r.FanoutFirstMs > 0 && r.FanoutFirstMs <= r.FanoutAllMs && r.LatMaxMs > 0) || r.FanoutServerCPUMs <= 0 || r.Acked != int64(k) {
				t.Fatalf("fan-out times: %+v", r)
			}
			if r.ServerRSSBeforeMiB <= 0 || r.ServerRSSMiB <= 0 || r.ServerRSSEndMiB <= 0 || r.ConnectsPerSec <= 0 || r.OpenSec <= 0 {
				t.Fatalf("memory and rates: %+v", r)
			}
			if want := (r.ServerRSSMiB - r.ServerRSSBeforeMiB) * 1024 / float64(r.Connections); abs(r.MemPerConnKiB-want) > 1e-6 {
				t.Fatalf("KiB per connection %v, want %v", r.MemPerConnKiB, want)
			}
			if r.DurationSec < 1.5 {
				t.Fatalf("held %vs", r.DurationSec)
			}
			for _, w := range r.Warnings {
				if !strings.Contains(w, "tool used") { // parallel tests may keep the tool busy
					t.Errorf("warning: %s", w)
				}
			}
			var out bytes.Buffer
			if err := WriteTable(&out, res); err != nil {
				t.Fatal(err)
			}
			if s := out.String(); !strings.Contains(s, fmt.Sprintf("publish to all: %d of %d delivered", tc.conns, tc.conns)) ||
				!strings.Contains(s, "0 disconnects during the hold") {
				t.Fatalf("table:\n%s", s)
			}
			out.Reset()
			if err := WriteJSON(&out, r); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{`"hold_disconnects":0`, fmt.Sprintf(`"fanout_delivered":%d`, tc.conns), `"fanout_all_ms":`,
				`"fanout_first_ms":`, `"fanout_server_cpu_ms":`, `"mem_per_conn_kib":`, `"connects_per_s":`} {
				if !strings.Contains(out.String(), key) {
					t.Fatalf("JSON without %s: %s", key, out.String())
				}
			}
			// Every connection closed at the end.
			deadline := time.Now().Add(5 * time.Second)
			for len(n.Front().Sockets()) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections still open on the node after the run", len(n.Front().Sockets()))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestHoldAgainstBroker: a fake server that relays publications to its
// subscribers, pings each once it subscribed (the pong must come back) and
// closes every fifth 200 ms later, during the hold, with 4001: those are
// counted as hold disconnects, the others get the publication.
func TestHoldAgainstBroker(t *testing.T) {
	t.Parallel()
	const n, every = 20, 5
	type sub struct {
		mu sync.Mutex
		c  net.Conn
	}
	var (
		mu        sync.Mutex
		subs      []*sub
		seq       atomic.Int64
		pongs     atomic.Int64
		published atomic.Int64
	)
	url, _ := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		if !acceptAndReadHandshake(t, c, br) {
			return
		}
		io.WriteString(c, serverFrame(1, `{"rid":1,"data":{"id":"x","pingTimeout":20000,"isAuthenticated":false}}`))
		_, p, err := readClientFrame(br)
		if err != nil {
			t.Error(err)
			return
		}
		var pkt struct {
			Event string
			Data  struct {
				Channel string
				Data    json.RawMessage
			}
			Cid int64
		}
		if err := json.Unmarshal(p, &pkt); err != nil {
			t.Errorf("%q: %v", p, err)
			return
		}
		switch pkt.Event {
		case "#subscribe":
			if pkt.Cid != 2 || !strings.Contains(pkt.Data.Channel, ".hold.0") {
				t.Errorf("subscribe %q", p)
				return
			}
			s := &sub{c: c}
			s.mu.Lock()
			mu.Lock()
			subs = append(subs, s)
			mu.Unlock()
			io.WriteString(c, serverFrame(1, `{"rid":2}`)+serverFrame(1, ""))
			s.mu.Unlock()
			if err := expectFrame(br, 1, ""); err != nil {
				t.Error(err)
				return
			}
			pongs.Add(1)
			if seq.Add(1)%every == 0 {
				time.Sleep(200 * time.Millisecond)
				s.mu.Lock()
				io.WriteString(c, serverFrame(8, "\x0f\xa1ping timeout"))
				s.mu.Unlock()
				if err := expectFrame(br, 8, "\x03\xe8"); err != nil {
					t.Error(err)
				}
				c.Close()
				return
			}
			io.Copy(io.Discard, br)
		case "#publish":
			published.Add(1)
			out := serverFrame(1, fmt.Sprintf(`{"event":"#publish","data":{"channel":%q,"data":%s}}`, pkt.Data.Channel, pkt.Data.Data))
			mu.Lock()
			for _, s := range subs {
				s.mu.Lock()
				io.WriteString(s.c, out)
				s.mu.Unlock()
			}
			mu.Unlock()
			io.WriteString(c, serverFrame(1, fmt.Sprintf(`{"rid":%d}`, pkt.Cid)))
			io.Copy(io.Discard, br)
		default:
			t.Errorf("unexpected %q", p)
		}
	})
	res := runOne(t, Config{URLs: []string{url}, Scenario: "hold", Connections: n, Concurrency: 4,
		Duration: time.Second, Drain: 500 * time.Millisecond})
	r := res[0]
	const dropped = n / every
	if r.Connections != n || r.ConnectErrors != 0 || r.Disconnects != dropped || r.HoldDisconnects == nil || *r.HoldDisconnects != dropped {
		t.Fatalf("hold: %+v", r)
	}
	if !hasWarning(r, fmt.Sprintf("%d connections were closed by the server or broke after subscribing (%d during the hold)", dropped, dropped), `close 4001 "ping timeout"`) {
		t.Fatalf("warnings %q", r.Warnings)
	}
	if r.FanoutDelivered == nil || *r.FanoutDelivered != n-dropped || r.FanoutReceivers != n-dropped || r.Expected != n-dropped || r.Lost != 0 ||
		published.Load() != 1 || r.Acked != 1 || pongs.Load() != n {
		t.Fatalf("fan-out: %+v, %d published, %d pongs", r, published.Load(), pongs.Load())
	}
	if !hasWarning(r, "no --server-pid") || r.FanoutServerCPUMs != 0 || r.MemPerConnKiB != 0 {
		t.Fatalf("server figures without a pid: %+v", r)
	}
}

func TestHoldSubscribeRefused(t *testing.T) {
	t.Parallel()
	url, _ := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		if !acceptAndReadHandshake(t, c, br) {
			return
		}
		io.WriteString(c, serverFrame(1, `{"rid":1,"data":{"id":"x","pingTimeout":20000,"isAuthenticated":false}}`))
		if op, _, err := readClientFrame(br); err != nil || op != 1 {
			return // the publisher: closed at the end, its socket perhaps by the cleanup first
		}
		io.WriteString(c, serverFrame(1, `{"rid":2,"error":{"name":"BrokerError","message":"no"}}`))
		io.Copy(io.Discard, br)
	})
	res := runOne(t, Config{URLs: []string{url}, Scenario: "hold", Connections: 6, Concurrency: 2, Duration: 100 * time.Millisecond, Drain: 100 * time.Millisecond})
	r := res[0]
	if r.Connections != 0 || r.ConnectErrors != 6 || !hasWarning(r, `subscribe: server error {"rid":2,"error"`) || r.FanoutDelivered != nil ||
		!hasWarning(r, "publish to all not measured: no connection left") {
		t.Fatalf("hold: %+v", r)
	}
}

// TestHoldStopsWhenStalled: a server that stops answering after the first
// connections; the open phase gives up once none completed for the
// connection timeout, instead of trying every connection in turn.
func TestHoldStopsWhenStalled(t *testing.T) {
	t.Parallel()
	const n, answered = 50, 3
	var seq atomic.Int64
	url, _ := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		if seq.Add(1) > answered+1 { // the publisher, then the first raw connections
			io.Copy(io.Discard, br)
			return
		}
		if !acceptAndReadHandshake(t, c, br) {
			return
		}
		io.WriteString(c, serverFrame(1, `{"rid":1,"data":{"id":"x","pingTimeout":20000,"isAuthenticated":false}}`))
		if op, _, err := readClientFrame(br); err != nil || op != 1 {
			return
		}
		io.WriteString(c, serverFrame(1, `{"rid":2}`)) // the publisher's publication gets it too: no cid 2, ignored
		io.Copy(io.Discard, br)
	})
	start := time.Now()
	res := runOne(t, Config{URLs: []string{url}, Scenario: "hold", Connections: n, Concurrency: 2, connectTimeout: 200 * time.Millisecond,
		Duration: 200 * time.Millisecond, Drain: 100 * time.Millisecond})
	r := res[0]
	if r.Connections != answered || r.NotAttempted == 0 || r.ConnectErrors+r.NotAttempted != n-answered ||
		!hasWarning(r, "not attempted") || !hasWarning(r, "no handshake answer within 200ms") {
		t.Fatalf("hold: %+v", r)
	}
	if !hasWarning(r, "publish to all incomplete: 0 of 3") || r.FanoutDelivered == nil || *r.FanoutDelivered != 0 {
		t.Fatalf("fan-out: %+v", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}
