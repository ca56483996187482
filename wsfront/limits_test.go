package wsfront

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOriginAllowed(t *testing.T) {
	allowed := []string{"https://app.example.com", "*.trusted.org", "http://localhost:*"}
	cases := map[string]bool{
		"":                           true, // non-browser client
		"https://app.example.com":    true,
		"https://evil.com":           false,
		"https://a.trusted.org":      true,
		"http://b.trusted.org":       true,
		"https://trusted.org.evil.x": false,
		"http://localhost:3000":      true,
		"https://localhost:3000":     false,
		"null":                       false,
	}
	for origin, want := range cases {
		if got := originAllowed(origin, allowed); got != want {
			t.Errorf("%q: %v, want %v", origin, got, want)
		}
	}
	if !originAllowed("https://anything.example", nil) {
		t.Error("empty list must allow every origin")
	}
}

func TestAdmissionLimits(t *testing.T) {
	a := newAdmission(Limits{MaxConnections: 3, MaxConnectionsPerIP: 2, HandshakeRatePerIP: 100})
	now := time.Now()
	for i := 0; i < 2; i++ {
		if code, _ := a.admit("10.0.0.1", now); code != 0 {
			t.Fatalf("connection %d refused", i)
		}
	}
	if code, msg := a.admit("10.0.0.1", now); code != http.StatusTooManyRequests || !strings.Contains(msg, "10.0.0.1") {
		t.Fatalf("third connection from one IP: %d %q", code, msg)
	}
	if code, _ := a.admit("10.0.0.2", now); code != 0 {
		t.Fatal("another IP refused")
	}
	if code, _ := a.admit("10.0.0.3", now); code != http.StatusServiceUnavailable {
		t.Fatalf("node limit not applied: %d", code)
	}
	a.release("10.0.0.1")
	if code, _ := a.admit("10.0.0.1", now); code != 0 {
		t.Fatal("slot not released")
	}
	r := newAdmission(Limits{MaxConnections: 1000, MaxConnectionsPerIP: 1000, HandshakeRatePerIP: 5})
	ok := 0
	for i := 0; i < 20; i++ {
		if code, _ := r.admit("10.0.0.9", now); code == 0 {
			ok++
		}
	}
	if ok != 5 {
		t.Fatalf("handshake rate 5/s with burst 5 admitted %d of 20 at once", ok)
	}
}

func TestLimitsOnTheWire(t *testing.T) {
	_, url := startFront(t, Config{Limits: Limits{MaxConnectionsPerIP: 2, PublishRate: 10, AllowedOrigins: []string{"https://good.example"}}})
	h := http.Header{"Origin": {"https://evil.example"}}
	_, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bad origin: %v %v", resp, err)
	}
	c := dialRaw(t, url)
	c.handshake()
	dialRaw(t, url)
	_, resp, err = websocket.DefaultDialer.Dial(url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection from one IP: %v %v", resp, err)
	}
	// Publish rate 10/s, burst 10: a burst of 30 acknowledged publishes gets ~20 refusals.
	for i := 0; i < 30; i++ {
		c.send(`{"event":"#publish","data":{"channel":"x","data":1},"cid":` + strconv.Itoa(100+i) + `}`)
	}
	limited := 0
	for i := 0; i < 30; i++ {
		m, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(m, "RateLimitError") {
			limited++
		}
	}
	if limited < 15 || limited > 20 {
		t.Fatalf("%d of 30 publishes rate limited, want about 20", limited)
	}
}

// TestPerIPLimitHoldsPastManyAddresses: with connections open from 5,000 source addresses
// (127.0.0.0/8 gives them on loopback), a new address is still held to its per-address limit.
// Before, once 4,096 addresses were tracked, a new address's entry was swept before it was
// marked seen, so every connection from it got a fresh entry: no limit at all.
func TestPerIPLimitHoldsPastManyAddresses(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 connections")
	}
	const perIP, addrs = 10, 5000
	_, url := startFront(t, Config{Limits: Limits{MaxConnectionsPerIP: perIP, HandshakeRatePerIP: -1}})
	dialFrom := func(src string) (*websocket.Conn, error) {
		d := websocket.Dialer{NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext, HandshakeTimeout: 5 * time.Second}
		c, _, err := d.Dial(url, nil)
		return c, err
	}
	var conns []*websocket.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range addrs {
		c, err := dialFrom(fmt.Sprintf("127.1.%d.%d", i/250, i%250+1))
		if err != nil {
			t.Fatalf("address %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	admitted := 0
	for range 3 * perIP {
		if c, err := dialFrom("127.2.0.1"); err == nil {
			conns = append(conns, c)
			admitted++
		}
	}
	if admitted != perIP {
		t.Fatalf("a new address after %d others: %d of %d connections admitted, want the limit of %d", addrs, admitted, 3*perIP, perIP)
	}
}

// TestAdmissionForgetsIdleAddressesOnATimer: entries of addresses without connections go after
// they have been idle, by a sweep at most every admissionSweepEvery (admit stays O(1)); an
// address with a connection is kept.
func TestAdmissionForgetsIdleAddressesOnATimer(t *testing.T) {
	a := newAdmission(Limits{MaxConnections: -1, MaxConnectionsPerIP: 2, HandshakeRatePerIP: -1})
	now := time.Unix(1000, 0)
	for i := range 5000 {
		ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250)
		if code, _ := a.admit(ip, now); code != 0 {
			t.Fatalf("%s refused", ip)
		}
		if i > 0 {
			a.release(ip)
		}
	}
	if len(a.perIP) != 5000 {
		t.Fatalf("%d addresses tracked, want 5000 (nothing idle yet)", len(a.perIP))
	}
	later := now.Add(admissionIdle + admissionSweepEvery)
	if code, _ := a.admit("10.9.9.9", later); code != 0 {
		t.Fatal("refused after the sweep")
	}
	if len(a.perIP) != 2 {
		t.Fatalf("%d addresses tracked after the sweep, want 2 (the one still connected, the new one)", len(a.perIP))
	}
	// The address still connected keeps its count: one more is its limit.
	first := "10.0.0.0"
	if code, _ := a.admit(first, later); code != 0 {
		t.Fatal("second connection of a kept address refused")
	}
	if code, _ := a.admit(first, later); code != http.StatusTooManyRequests {
		t.Fatal("a kept address lost its count in the sweep")
	}
}

// TestEventRateLimit: invokes and transmits are rate limited per connection like publishes:
// an invoke over the limit is answered with RateLimitError, a transmit over it is dropped and
// counted; another connection has its own budget.
func TestEventRateLimit(t *testing.T) {
	srv, url := startFront(t, Config{Limits: Limits{EventRate: 10}})
	var transmits atomic.Int64
	srv.HandleInvoke("inc", func(ctx context.Context, inv *Invocation) (any, error) { return 1, nil })
	srv.HandleTransmit("t", func(ctx context.Context, s *Socket, data json.RawMessage) { transmits.Add(1) })
	c := dialRaw(t, url)
	c.handshake()
	for i := range 30 {
		c.send(fmt.Sprintf(`{"event":"inc","data":1,"cid":%d}`, 100+i))
	}
	ok, limited := 0, 0
	for range 30 {
		got, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(got, "RateLimitError"):
			limited++
		case strings.Contains(got, `"data":1`):
			ok++
		}
	}
	if ok < 10 || ok > 12 || ok+limited != 30 {
		t.Fatalf("30 invokes at once with a limit of 10/s: %d answered, %d rate limited", ok, limited)
	}
	other := dialRaw(t, url)
	other.handshake()
	other.send(`{"event":"inc","data":1,"cid":5}`)
	other.expect(`{"rid":5,"data":1}`)
	for range 30 {
		other.send(`{"event":"t","data":1}`)
	}
	other.send(`{"event":"#subscribe","data":{"channel":"x"},"cid":6}`)
	other.expect(`{"rid":6}`) // after the transmits were handled
	if n := transmits.Load(); n < 9 || n > 11 {
		t.Fatalf("%d of 30 transmits handled with a budget of 10 (1 used by the invoke)", n)
	}
	want := float64(limited) + float64(30-transmits.Load())
	if n := testutil.ToFloat64(srv.cfg.Metrics.Events.WithLabelValues("rate_limited")); n != want {
		t.Fatalf("%v events counted as rate limited, want %v", n, want)
	}
}

// The node-wide handshake rate spreads a burst of connections (the clients of a node that died
// arriving at once) over time instead of refusing them; past HandshakeWait they get 503.
func TestHandshakeRatePacesABurst(t *testing.T) {
	const rate, n = 200, 60 // burst 2: 60 connections take about 0.3 s
	_, url := startFront(t, Config{Limits: Limits{HandshakeRate: rate, HandshakeRatePerIP: -1, HandshakeWait: 5 * time.Second}})
	failed, took := dialBurst(t, url, n)
	if failed != 0 || took < 250*time.Millisecond {
		t.Fatalf("%d connections at %d/s: %d failed, all in %v (want all, spread over about %v)", n, rate, failed, took, time.Second*n/rate)
	}
	// A wait past HandshakeWait is refused at once with 503 and Retry-After.
	_, url2 := startFront(t, Config{Limits: Limits{HandshakeRate: 1, HandshakeRatePerIP: -1, HandshakeWait: 100 * time.Millisecond}})
	c, _, err := websocket.DefaultDialer.Dial(url2, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, resp, err := websocket.DefaultDialer.Dial(url2, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second connection within the second at 1/s: %v %+v", err, resp)
	}
}

// serveOwn runs srv.Serve on a loopback listener (the node's way) and returns the WebSocket URL.
func serveOwn(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	srv := New(cfg, &memBroker{subs: map[string]map[*Socket]bool{}}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return srv, "ws://" + ln.Addr().String() + "/socketcluster/"
}

// On its own listener the node takes connections in their turn of the handshake rate: a
// burst waits in the kernel's accept queue, costing the node nothing, and is served in order
// rather than held or refused once read (the handler path refuses past HandshakeWait).
func TestServeAcceptsInTurn(t *testing.T) {
	const rate, n = 100, 40 // a burst of 1: 40 connections take about 0.4 s
	srv, url := serveOwn(t, Config{Limits: Limits{HandshakeRate: rate, HandshakeRatePerIP: -1, HandshakeWait: 50 * time.Millisecond}})
	failed, took := dialBurst(t, url, n)
	if failed != 0 || took < 300*time.Millisecond {
		t.Fatalf("%d connections at %d/s: %d failed, all in %v (want all, spread over about %v)", n, rate, failed, took, time.Second*n/rate)
	}
	if p := testutil.ToFloat64(srv.cfg.Metrics.PacedHandshakes); p == 0 {
		t.Fatal("no paced accept counted")
	}
	if r := testutil.ToFloat64(srv.cfg.Metrics.Refused.WithLabelValues("node_rate")); r != 0 {
		t.Fatalf("%v refused for the node rate", r)
	}
}

// A connection that does not become a socket gives its turn back: strangers' bytes, a client
// that leaves before its turn and requests that are refused do not use up the rate that
// clients behind them wait for.
func TestServeReturnsUnusedTurns(t *testing.T) {
	const rate = 2 // a turn every 0.5 s
	_, url := serveOwn(t, Config{Limits: Limits{HandshakeRate: rate, HandshakeRatePerIP: -1}})
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/socketcluster/")
	c, _, err := websocket.DefaultDialer.Dial(url, nil) // takes the first turn
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, send := range []string{
		"",                                       // connects and leaves
		"\x16\x03\x01\x02\x00\x01\x00\x01",       // a TLS hello on the plain port
		"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", // the wrong path: 400
		"GET /socketcluster/ HTTP/1.1\r\nHost: x\r\n\r\n", // not an upgrade: 400
		"\xff\xfe garbage\r\n\r\n",
		"GET /socketcluster/ HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
	} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if send != "" {
			_, _ = nc.Write([]byte(send))
		}
		defer nc.Close()
		if send == "" {
			nc.Close()
		}
	}
	// Six connections ahead: without their turns back the client would wait about 3 s.
	start := time.Now()
	c2, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the client behind six unused turns was served after %v (want about one turn, 0.5 s)", took)
	}
}

// dialBurst opens n WebSocket connections to url at once and closes them: how many failed
// (refusals logged), and how long all took.
func dialBurst(t *testing.T, url string, n int) (failed int32, took time.Duration) {
	start := time.Now()
	var wg sync.WaitGroup
	var f atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, resp, err := websocket.DefaultDialer.Dial(url, nil)
			if err != nil {
				f.Add(1)
				if resp != nil {
					t.Logf("refused: %s", resp.Status)
				}
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	return f.Load(), time.Since(start)
}
