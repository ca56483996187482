package wsfront

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsframe"
)

// memBroker is an in-memory Broker for tests of the front alone.
type memBroker struct {
	mu   sync.Mutex
	subs map[string]map[*Socket]bool
}

func (b *memBroker) Subscribe(s *Socket, ch string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[ch] == nil {
		b.subs[ch] = map[*Socket]bool{}
	}
	b.subs[ch][s] = true
}

func (b *memBroker) Unsubscribe(s *Socket, ch string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs[ch], s)
}

func (b *memBroker) Publish(ch string, data json.RawMessage) {
	frame := scproto.EncodePublish(ch, data)
	for _, s := range b.targets(ch) {
		s.Deliver(frame)
	}
}

// targets is a copy of ch's subscribers (delivering happens outside the lock).
func (b *memBroker) targets(ch string) []*Socket {
	b.mu.Lock()
	defer b.mu.Unlock()
	targets := make([]*Socket, 0, len(b.subs[ch]))
	for s := range b.subs[ch] {
		targets = append(targets, s)
	}
	return targets
}

func startFront(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	b := &memBroker{subs: map[string]map[*Socket]bool{}}
	a, _ := access.NewAuth("k", 0)
	srv := New(cfg, b, a)
	hs := httptest.NewServer(srv)
	t.Cleanup(srv.Close)
	t.Cleanup(hs.Close)
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http") + "/socketcluster/"
}

type rawClient struct {
	t       *testing.T
	ws      *websocket.Conn
	pending []string // packets of a batch frame not yet returned
	// rawBatches returns array frames whole instead of split.
	rawBatches bool
}

func dialRaw(t *testing.T, url string) *rawClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &rawClient{t: t, ws: ws}
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next non-ping packet (batches are split), answering pings.
func (c *rawClient) next() (string, error) {
	if len(c.pending) > 0 {
		p := c.pending[0]
		c.pending = c.pending[1:]
		return p, nil
	}
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return "", err
		}
		if len(b) == 0 {
			_ = c.ws.WriteMessage(websocket.TextMessage, nil)
			continue
		}
		if b[0] == '[' && !c.rawBatches {
			var items []json.RawMessage
			if err := json.Unmarshal(b, &items); err != nil {
				c.t.Fatalf("bad batch %s: %v", b, err)
			}
			for _, it := range items[1:] {
				c.pending = append(c.pending, string(it))
			}
			return string(items[0]), nil
		}
		return string(b), nil
	}
}

func (c *rawClient) expect(want string) {
	c.t.Helper()
	got, err := c.next()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", want, err)
	}
	if !strings.Contains(got, want) {
		c.t.Fatalf("got %s, want it to contain %s", got, want)
	}
}

// closeCode reads until the connection closes and returns the close code.
func (c *rawClient) closeCode() int {
	c.t.Helper()
	for {
		_, err := c.next()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}

func (c *rawClient) handshake() {
	c.t.Helper()
	c.send(`{"event":"#handshake","data":{"authToken":null},"cid":1}`)
	c.expect(`"rid":1`)
}

func TestHandshakeGuards(t *testing.T) {
	_, url := startFront(t, Config{HandshakeTimeout: 300 * time.Millisecond})
	cases := []struct {
		name  string
		first string // "" = send nothing
		code  int
	}{
		{"silent client", "", scproto.CloseHandshakeTimeout},
		{"event before handshake", `{"event":"hello","data":1}`, scproto.CloseBeforeHandshake},
		{"handshake without cid", `{"event":"#handshake","data":{}}`, scproto.CloseHandshakeRejected},
		{"handshake with string cid", `{"event":"#handshake","data":{},"cid":"abc"}`, scproto.CloseHandshakeRejected},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, url)
			if tc.first != "" {
				c.send(tc.first)
			}
			if got := c.closeCode(); got != tc.code {
				t.Fatalf("close code %d, want %d", got, tc.code)
			}
		})
	}
	t.Run("pong before handshake", func(t *testing.T) {
		c := dialRaw(t, url)
		c.send("")
		if got := c.closeCode(); got != scproto.CloseBeforeHandshake {
			t.Fatalf("close code %d, want 4009", got)
		}
	})
}

func TestBadInputAfterHandshakeKeepsConnection(t *testing.T) {
	_, url := startFront(t, Config{MaxChannelLength: 8, MaxSubscriptions: 2})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"broken json`)
	c.send(`this is not json`)
	c.send(`{"rid":999,"data":"nobody asked"}`)
	c.send(`{"event":"nobody-handles-this","data":1}`)
	c.send(`{"event":"nobody-handles-this","cid":2}`)
	c.expect(`{"rid":2,"error":{"message":"No handler is registered for the nobody-handles-this event","name":"UnhandledEventError"}}`)
	for i, ch := range []string{`""`, `"waytoolongname"`, `"\u0001ctl"`, `"\ud800"`} {
		cid := 10 + i
		c.send(`{"event":"#subscribe","data":{"channel":` + ch + `},"cid":` + strconv.Itoa(cid) + `}`)
		c.expect(`"rid":` + strconv.Itoa(cid) + `,"error":{"message":"Channel name`)
	}
	c.send(`{"event":"#subscribe","data":{"channel":5},"cid":20}`)
	c.expect(`{"rid":20,"error":{"message":"Subscribe channel name was malformatted","name":"InvalidActionError"}}`)
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":21}`)
	c.expect(`{"rid":21}`)
	c.send(`{"event":"#subscribe","data":{"channel":"b"},"cid":22}`)
	c.expect(`{"rid":22}`)
	c.send(`{"event":"#subscribe","data":{"channel":"c"},"cid":23}`)
	c.expect(`"rid":23,"error":{"message":"Failed to subscribe socket to the c channel - InvalidActionError: Socket`)
	c.send(`{"event":"#publish","data":{"channel":"a","data":"still here"},"cid":24}`)
	c.expect(`{"event":"#publish","data":{"channel":"a","data":"still here"}}`)
}

func TestOversizedFrameCloses1009(t *testing.T) {
	_, url := startFront(t, Config{MaxPayload: 1024})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#publish","data":{"channel":"a","data":"` + strings.Repeat("x", 2000) + `"}}`)
	if got := c.closeCode(); got != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", got)
	}
}

func TestPongTimeoutCloses4001(t *testing.T) {
	_, url := startFront(t, Config{PingInterval: 50 * time.Millisecond, PingTimeout: 300 * time.Millisecond})
	c := dialRaw(t, url)
	c.handshake()
	// Read without answering pings.
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, _, err := c.ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != scproto.ClosePongTimeout {
				t.Fatalf("close code %d, want 4001", ce.Code)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestSlowConsumerIsCutOthersKeepReceiving(t *testing.T) {
	const total = 10000
	srv, url := startFront(t, Config{SendQueueBytes: 256 << 10, WriteTimeout: 2 * time.Second})
	slow := dialRaw(t, url)
	slow.handshake()
	slow.send(`{"event":"#subscribe","data":{"channel":"feed"},"cid":2}`)
	slow.expect(`{"rid":2}`)
	fast := dialRaw(t, url)
	fast.handshake()
	fast.send(`{"event":"#subscribe","data":{"channel":"feed"},"cid":2}`)
	fast.expect(`{"rid":2}`)

	var fastGot atomic.Int64
	got := make(chan int, 1)
	go func() {
		for {
			m, err := fast.next()
			if err != nil {
				got <- int(fastGot.Load())
				return
			}
			if fastGot.Add(int64(strings.Count(m, `"#publish"`))) >= total {
				got <- total
				return
			}
		}
	}()
	payload := `"` + strings.Repeat("p", 2000) + `"`
	// The slow client never reads again: the kernel's socket buffers fill (a few MB on
	// loopback), then its send queue; 20 MB in all is far more than both. The publisher
	// stays at most 50 publications ahead of the fast reader, so only the slow one can
	// overflow whatever the machine's speed.
	for i := 0; i < total; i++ {
		for int64(i)-fastGot.Load() > 50 {
			select {
			case n := <-got:
				t.Fatalf("fast client stopped after %d of %d", n, total)
			case <-time.After(100 * time.Microsecond):
			}
		}
		srv.broker.Publish("feed", json.RawMessage(payload))
	}
	select {
	case n := <-got:
		if n < total {
			t.Fatalf("fast client got %d of %d", n, total)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("fast client stalled")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.Sockets()) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("slow consumer not disconnected: %d sockets", len(srv.Sockets()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With ArrayFrames, packets waiting for one client go out packed into JSON array frames.
func TestArrayFramesPackWaitingPackets(t *testing.T) {
	srv, url := startFront(t, Config{ArrayFrames: true})
	c := dialRaw(t, url)
	c.rawBatches = true
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	// Queue several frames while the writer is busy elsewhere: they should come as arrays.
	for i := 0; i < 200; i++ {
		srv.broker.Publish("a", json.RawMessage(strconv.Itoa(i)))
	}
	seen, arrays := 0, 0
	for seen < 200 {
		m, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		if m[0] == '[' {
			arrays++
			var items []json.RawMessage
			if err := json.Unmarshal([]byte(m), &items); err != nil {
				t.Fatalf("bad batch %s: %v", m, err)
			}
		}
		// Order must hold across and inside batches.
		for _, part := range strings.Split(m, `"channel":"a","data":`)[1:] {
			want := strconv.Itoa(seen)
			if !strings.HasPrefix(part, want+"}") {
				t.Fatalf("publication %d out of order: %s", seen, part[:min(len(part), 12)])
			}
			seen++
		}
	}
	// Without a write delay, frames queue behind the write in progress and go out together
	// (200 publications take far less time than 200 loopback writes).
	if arrays == 0 {
		t.Fatal("200 publications in a row were written one frame each: no batch formed")
	}
}

// By default every packet is its own frame, as socketcluster-server writes (clients that parse
// one JSON object per frame lose every packet of an array frame), and frames that wait go out
// together in one write all the same.
func TestOnePacketPerFrameCoalescedIntoFewWrites(t *testing.T) {
	srv, url := startFront(t, Config{})
	c := dialRaw(t, url)
	c.rawBatches = true
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	m := srv.cfg.Metrics
	// A write is counted once it returns, maybe after the client read it: let the handshake's
	// and the subscription's answers be counted first.
	waitFor(t, "the answers' writes counted", func() bool { return testutil.ToFloat64(m.FramesOut) == 2 })
	frames0, writes0 := testutil.ToFloat64(m.FramesOut), testutil.ToFloat64(m.Writes)
	for i := 0; i < 200; i++ {
		srv.broker.Publish("a", json.RawMessage(strconv.Itoa(i)))
	}
	for i := 0; i < 200; i++ {
		f, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			Event string
			Data  struct{ Data int }
		}
		if err := json.Unmarshal([]byte(f), &p); err != nil || p.Event != "#publish" || p.Data.Data != i {
			t.Fatalf("frame %d is not publication %d alone: %.60s (%v)", i, i, f, err)
		}
	}
	waitFor(t, "the publications' writes counted", func() bool { return testutil.ToFloat64(m.FramesOut)-frames0 >= 200 })
	frames, writes := testutil.ToFloat64(m.FramesOut)-frames0, testutil.ToFloat64(m.Writes)-writes0
	t.Logf("200 publications: %.0f frames in %.0f writes", frames, writes)
	if frames != 200 || writes >= frames {
		t.Fatalf("%.0f frames in %.0f writes: want 200 frames, fewer writes", frames, writes)
	}
}

// Calls that arrive together are answered together: the reader writes its answers itself
// once it has handled everything it read (one write: five frames, or one array frame with
// ArrayFrames), rather than a writer goroutine racing it and sending the first answer alone.
func TestCallsReadTogetherAreAnsweredInOneWrite(t *testing.T) {
	for _, arrays := range []bool{false, true} {
		t.Run(fmt.Sprintf("ArrayFrames=%v", arrays), func(t *testing.T) { callsAnsweredTogether(t, arrays) })
	}
}

func callsAnsweredTogether(t *testing.T, arrays bool) {
	srv, url := startFront(t, Config{ArrayFrames: arrays})
	c := dialRaw(t, url)
	c.rawBatches = true
	c.handshake()
	// The handshake's answer is counted once its write returns, maybe after the client read it.
	waitFor(t, "the handshake's write counted", func() bool { return testutil.ToFloat64(srv.cfg.Metrics.Writes) == 1 })
	for round := 0; round < 20; round++ {
		writes0 := testutil.ToFloat64(srv.cfg.Metrics.Writes)
		// Five calls in one TCP write (frames built with wsframe: gorilla writes one frame
		// per system call).
		var burst []byte
		for i := 0; i < 5; i++ {
			p := `{"event":"#subscribe","data":{"channel":"c` + strconv.Itoa(round*5+i) + `"},"cid":` + strconv.Itoa(2+round*5+i) + `}`
			burst = wsframe.AppendClientFrame(burst, wsframe.Text, []byte(p))
		}
		if _, err := c.ws.UnderlyingConn().Write(burst); err != nil {
			t.Fatal(err)
		}
		var got string
		for len(got) == 0 || !arrays && strings.Count(got, "rid") < 5 {
			m, err := c.next()
			if err != nil {
				t.Fatal(err)
			}
			if !arrays && strings.HasPrefix(m, "[") {
				t.Fatalf("round %d: an array frame without ArrayFrames: %s", round, m)
			}
			got += m
		}
		for i := 0; i < 5; i++ {
			if want := `{"rid":` + strconv.Itoa(2+round*5+i) + `}`; !strings.Contains(got, want) {
				t.Fatalf("round %d: %s lacks %s: the answers to one read were split", round, got, want)
			}
		}
		w := testutil.ToFloat64(srv.cfg.Metrics.Writes) - writes0
		for deadline := time.Now().Add(time.Second); w == 0 && time.Now().Before(deadline); { // counted after the write returns
			time.Sleep(time.Millisecond)
			w = testutil.ToFloat64(srv.cfg.Metrics.Writes) - writes0
		}
		if w != 1 {
			t.Fatalf("round %d: the five answers took %.0f writes", round, w)
		}
	}
}

// A drain spreads closes over its duration, but stops waiting as soon as every client is
// gone, and closes with the code it was given.
func TestShutdownSpreadsClosesAndEndsWhenEmpty(t *testing.T) {
	srv, url := startFront(t, Config{})
	var clients []*rawClient
	for i := 0; i < 3; i++ {
		c := dialRaw(t, url)
		c.handshake()
		clients = append(clients, c)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- srv.Shutdown(context.Background(), scproto.CloseServerPingTimeout, "node draining", 6*time.Second)
	}()
	// Whichever client the drain closes first must get 4000; the other two then leave by
	// themselves before their turn.
	first := make(chan int, 3)
	for i, c := range clients {
		go func(i int, c *rawClient) {
			for {
				_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, err := c.ws.ReadMessage()
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					first <- ce.Code
					return
				}
				if err != nil {
					first <- -i - 1
					return
				}
			}
		}(i, c)
	}
	if code := <-first; code != scproto.CloseServerPingTimeout {
		t.Fatalf("first close code %d, want 4000", code)
	}
	for _, c := range clients {
		c.ws.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown kept waiting out the spread after every client had gone")
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("drain took %s", el)
	}
	if n := len(srv.Sockets()); n != 0 {
		t.Fatalf("%d sockets left", n)
	}
}

// With a write delay, publications to a connection written to less than the delay ago wait
// and go out together; a response is never held back; a quiet connection is written at once.
func TestWriteDelayCoalescesPublicationsButNotResponses(t *testing.T) {
	const delay = 400 * time.Millisecond
	srv, url := startFront(t, Config{WriteDelay: delay, WriteDelayLoad: -1, ArrayFrames: true}) // "together" = one array frame
	c := dialRaw(t, url)
	c.rawBatches = true
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	time.Sleep(delay) // the connection is quiet now

	read := func() (string, time.Duration) {
		t.Helper()
		start := time.Now()
		m, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		return m, time.Since(start)
	}
	srv.broker.Publish("a", json.RawMessage(`1`))
	if m, took := read(); !strings.Contains(m, `"data":1}`) || took > delay/2 {
		t.Fatalf("first publication on a quiet connection: %s after %v, want at once", m, took)
	}
	// Busy now: these two wait for the window and arrive as one array frame.
	t0 := time.Now()
	srv.broker.Publish("a", json.RawMessage(`2`))
	srv.broker.Publish("a", json.RawMessage(`3`))
	m, _ := read()
	if !strings.HasPrefix(m, "[") || !strings.Contains(m, `"data":2}`) || !strings.Contains(m, `"data":3}`) {
		t.Fatalf("publications within the window: %s, want one array frame with both", m)
	}
	if el := time.Since(t0); el < delay/2 {
		t.Fatalf("publications within the window written after %v, want them held about %v", el, delay)
	}
	// Busy again, but a response ends the wait and carries the held publication with it.
	t1 := time.Now()
	srv.broker.Publish("a", json.RawMessage(`4`))
	c.send(`{"event":"#subscribe","data":{"channel":"b"},"cid":3}`)
	m, _ = read()
	if !strings.Contains(m, `"data":4}`) || !strings.Contains(m, `"rid":3`) {
		t.Fatalf("got %s, want the held publication and the response together", m)
	}
	if el := time.Since(t1); el > delay/2 {
		t.Fatalf("a response waited %v for the write window", el)
	}
}

// A write stuck on a client that stopped reading is cut by the sweeper after WriteTimeout
// (data frames carry no deadline of their own).
func TestStuckWriteIsCutAfterWriteTimeout(t *testing.T) {
	srv, url := startFront(t, Config{WriteTimeout: 300 * time.Millisecond, PingInterval: 100 * time.Millisecond,
		SendQueueBytes: 64 << 20})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	// The client reads nothing from here on: fill the kernel buffers until a write blocks.
	// 256 KiB every 20 ms: the 64 MiB queue would take over 5 s to overflow (the slow
	// consumer path), so a cut within 4 s is the write timeout's.
	big := json.RawMessage(`"` + strings.Repeat("x", 256<<10) + `"`)
	deadline := time.Now().Add(4 * time.Second)
	for len(srv.Sockets()) > 0 && time.Now().Before(deadline) {
		srv.broker.Publish("a", big)
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(srv.Sockets()); n != 0 {
		t.Fatalf("%d sockets still open: the stuck write was never cut", n)
	}
}

// Serve (the node's client listener) upgrades WebSocket requests, answers anything else
// with ServeHTTP's status and closes, refuses oversized requests, and stops with the
// listener.
func TestServeOwnListener(t *testing.T) {
	b := &memBroker{subs: map[string]map[*Socket]bool{}}
	srv := New(Config{}, b, nil)
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	addr := ln.Addr().String()

	resp, err := http.Get("http://" + addr + "/other")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "WebSocket path is /socketcluster/") {
		t.Fatalf("wrong path: %d %q", resp.StatusCode, body)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET /socketcluster/ HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", maxRequestBytes)+"\r\n\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.Contains(line, " 400 ") {
		t.Fatalf("oversized request answered %q", line)
	}

	cl := dialRaw(t, "ws://"+addr+"/socketcluster/")
	cl.handshake()
	cl.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	cl.expect(`{"rid":2}`)
	b.Publish("a", json.RawMessage(`"hi"`))
	cl.expect(`"data":"hi"`)

	ln.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after the listener closed")
	}
}

// After a burst of at least ReleaseMemoryAfter new connections, the first quiet sweeper
// tick collects the storm's garbage, once per burst.
func TestMemoryReleasedAfterConnectionStorm(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, url := startFront(t, Config{ReleaseMemoryAfter: 5, PingInterval: 200 * time.Millisecond, Logger: logger})
	for i := 0; i < 5; i++ {
		dialRaw(t, url).handshake()
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "connection storm over") {
		if time.Now().After(deadline) {
			t.Fatal("no release after the storm")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // more quiet ticks: no second release
	if n := strings.Count(logs.String(), "connection storm over"); n != 1 {
		t.Fatalf("%d releases for one storm", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Connections opened together are not pinged together: after the handshake each one's ping
// schedule gets a random phase within the interval (and none is pinged before its handshake).
func TestPingsOfConnectionsOpenedTogetherAreSpread(t *testing.T) {
	const interval = 800 * time.Millisecond
	_, url := startFront(t, Config{PingInterval: interval, PingTimeout: 10 * time.Second})
	const n = 20
	firsts := make(chan time.Time, n)
	for i := 0; i < n; i++ {
		c := dialRaw(t, url)
		c.handshake()
		go func() {
			_ = c.ws.SetReadDeadline(time.Now().Add(3 * interval))
			if _, b, err := c.ws.ReadMessage(); err == nil && len(b) == 0 {
				firsts <- time.Now()
				return
			}
			firsts <- time.Time{}
		}()
	}
	var lo, hi time.Time
	for i := 0; i < n; i++ {
		at := <-firsts
		if at.IsZero() {
			t.Fatal("a connection got something other than a ping, or nothing")
		}
		if lo.IsZero() || at.Before(lo) {
			lo = at
		}
		if at.After(hi) {
			hi = at
		}
	}
	// Twenty uniform phases over 800 ms all within 100 ms: about 1 in 10^15.
	if hi.Sub(lo) < interval/8 {
		t.Fatalf("first pings of %d connections opened together all within %v", n, hi.Sub(lo))
	}
}

// An idle connection holds no goroutine on the server (its socket is parked; at most
// keptWorkers goroutines wait for work in total), and a parked socket still answers
// requests and receives publications.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	srv, url := startFront(t, Config{})
	if srv.poller == nil {
		t.Skip("connection parking needs Linux")
	}
	const n = keptWorkers + 200
	base := runtime.NumGoroutine()
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialRaw(t, url)
		clients[i].handshake()
	}
	// Writers retire at the first sweeper tick after 250 ms idle (tick 500 ms by default).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine()-base > keptWorkers+20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines more than before %d idle connections", runtime.NumGoroutine()-base, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, c := range clients {
		c.send(`{"event":"#subscribe","data":{"channel":"idle"},"cid":` + strconv.Itoa(i+2) + `}`)
		c.expect(`"rid":` + strconv.Itoa(i+2))
	}
	srv.broker.Publish("idle", json.RawMessage(`"wake"`))
	for _, c := range clients {
		c.expect(`"data":"wake"`)
	}
}

// After a write, a writer with nothing queued waits for the next frame at once instead of
// first waiting out the write window on a timer: a connection that gets a publication now
// and then costs no timer per delivery. Frames that do come within the window still wait
// for it (TestWriteDelayCoalescesPublicationsButNotResponses).
func TestWriterWithNothingQueuedIdlesAtOnce(t *testing.T) {
	const delay = 2 * time.Second
	srv, url := startFront(t, Config{WriteDelay: delay})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	socks := srv.Sockets()
	if len(socks) != 1 {
		t.Fatalf("%d sockets, want 1", len(socks))
	}
	s := socks[0]
	srv.broker.Publish("a", json.RawMessage(`1`))
	if m, err := c.next(); err != nil || !strings.Contains(m, `"data":1}`) {
		t.Fatalf("publication: %q %v", m, err)
	}
	deadline := time.Now().Add(delay / 2)
	for {
		s.mu.Lock()
		idle := s.writing && !s.delaying && !s.idleSince.IsZero()
		s.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer is still waiting out the %v window with nothing queued", delay)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFramesWaitingThroughAStallAreDropped: when this process did not run for longer than the
// ping timeout (SIGSTOP, a VM pause), its clients stopped hearing pings, gave up and reconnected
// elsewhere. A publication one of them sent into the frozen connection must not be handled when
// the process runs again: published after what the client published since (elsewhere), it would
// arrive out of order. Connections opened after the stall are not affected.
func TestFramesWaitingThroughAStallAreDropped(t *testing.T) {
	const pingTimeout = 1500 * time.Millisecond
	srv, url := startFront(t, Config{PingInterval: time.Minute, PingTimeout: pingTimeout})
	old := dialRaw(t, url)
	old.handshake()
	// Keep the connection alive (any inbound frame counts; no pings at this interval) until it
	// is older than the stall to come.
	for i := range 6 {
		old.send(fmt.Sprintf(`{"event":"#subscribe","data":{"channel":"k"},"cid":%d}`, 10+i))
		time.Sleep(300 * time.Millisecond)
	}
	witness := dialRaw(t, url)
	witness.handshake()
	witness.send(`{"event":"#subscribe","data":{"channel":"feed"},"cid":2}`)
	witness.expect(`{"rid":2}`)
	// The stall: as if the process had not run for longer than the ping timeout, with the old
	// connection's publication waiting in the kernel.
	srv.lastTick.Store(time.Now().Add(-pingTimeout - 100*time.Millisecond).UnixNano())
	old.send(`{"event":"#publish","data":{"channel":"feed","data":"stale"}}`)
	for {
		if _, err := old.next(); err != nil {
			break // dropped, without a close handshake (its client is gone)
		}
	}
	fresh := dialRaw(t, url)
	fresh.handshake()
	fresh.send(`{"event":"#publish","data":{"channel":"feed","data":"fresh"}}`)
	got, err := witness.next()
	if err != nil {
		t.Fatalf("witness (opened after the stall): %v", err)
	}
	if !strings.Contains(got, `"fresh"`) {
		t.Fatalf("witness got %s first, want the fresh publication (the stale one must not be handled)", got)
	}
}

// TestWriteDelayDefault: a program that embeds the front (or the node) without setting
// WriteDelay gets the documented 20 ms, as the CLI does; a negative value turns it off.
func TestWriteDelayDefault(t *testing.T) {
	for _, c := range []struct {
		set, want time.Duration
	}{{0, 20 * time.Millisecond}, {-1, 0}, {5 * time.Millisecond, 5 * time.Millisecond}} {
		cfg := Config{WriteDelay: c.set}
		cfg.setDefaults()
		if cfg.WriteDelay != c.want {
			t.Errorf("WriteDelay %v: effective %v, want %v", c.set, cfg.WriteDelay, c.want)
		}
	}
}

// The handshake answer built by hand is byte for byte what encoding/json makes of it.
func TestStatusResponseMatchesEncodingJSON(t *testing.T) {
	for _, id := range []string{"n1-AAAAAAAAAAE", "x", "a<b", `q"uote`, "é"} {
		s := &Socket{srv: &Server{cfg: Config{PingTimeout: 20 * time.Second}}, id: id}
		got := string(s.statusResponse(json.RawMessage(`7`), nil))
		want, _ := json.Marshal(struct {
			ID              string `json:"id"`
			PingTimeout     int64  `json:"pingTimeout"`
			IsAuthenticated bool   `json:"isAuthenticated"`
		}{id, 20000, false})
		if w := `{"rid":7,"data":` + string(want) + `}`; got != w {
			t.Fatalf("id %q: %s, want %s", id, got, w)
		}
	}
}

// A served connection's reads go through the raw read: its prefetching connection is given
// the socket's poll state.
func TestServedSocketReadsRaw(t *testing.T) {
	srv, url := startFront(t, Config{})
	c := dialRaw(t, url)
	c.handshake()
	socks := srv.Sockets()
	if len(socks) != 1 {
		t.Fatalf("%d sockets, want 1", len(socks))
	}
	s := socks[0]
	if !s.poll.Raw() {
		t.Skip("no raw reads on this system")
	}
	if s.pc == nil || !s.pc.ReadsRaw(&s.poll) {
		t.Fatal("the socket's reads do not go through its poll state")
	}
}

// The request a socket keeps for its life has the client's headers but not the handshake's
// own (Connection, Upgrade, Sec-WebSocket-Key/Version/Extensions), which an idle connection
// would otherwise hold for hours.
func TestKeptRequestDropsHandshakeHeaders(t *testing.T) {
	srv, url := startFront(t, Config{})
	srv.HandleInvoke("headers", func(_ context.Context, inv *Invocation) (any, error) {
		return inv.Socket.Request().Header, nil
	})
	hdr := http.Header{"Cookie": {"session=abc"}, "X-App": {"7"}, "Origin": {"http://app.example"}}
	ws, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &rawClient{t: t, ws: ws}
	c.handshake()
	c.send(`{"event":"headers","cid":2}`)
	m, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Cookie":["session=abc"]`, `"X-App":["7"]`, `"Origin":["http://app.example"]`} {
		if !strings.Contains(m, want) {
			t.Errorf("kept headers lack %s: %s", want, m)
		}
	}
	for _, gone := range []string{"Sec-Websocket-Key", "Sec-Websocket-Version", "Upgrade", "Connection"} {
		if strings.Contains(m, `"`+gone+`"`) {
			t.Errorf("kept headers still hold %s: %s", gone, m)
		}
	}
}
