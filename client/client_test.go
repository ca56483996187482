package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines. zmq4's PUB writer of a node started by a test
// (recovery_test.go) outlives the node's Close: a known zmq4 v0.17.0 trait, not the client's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"))
}

// dial connects a client to fs (its first URL when opts.URLs is empty),
// completes the handshake on the server side and returns both ends.
func dial(t *testing.T, fs *fakeServer, opts Options) (*Client, *fakeConn) {
	t.Helper()
	return dialPing(t, fs, opts, 30000)
}

// dialPing is dial with the pingTimeout (ms) the fake server announces.
func dialPing(t *testing.T, fs *fakeServer, opts Options, pingTimeoutMS int) (*Client, *fakeConn) {
	t.Helper()
	if len(opts.URLs) == 0 {
		opts.URLs = []string{fs.URL}
	}
	type res struct {
		c   *Client
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Dial(context.Background(), opts)
		ch <- res{c, err}
	}()
	fc := fs.accept(t)
	fc.handshake(t, pingTimeoutMS)
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c, fc
}

// subscribe runs Subscribe while the server acknowledges it.
func subscribe(t *testing.T, c *Client, fc *fakeConn, channel string, h func(string, json.RawMessage)) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- c.Subscribe(context.Background(), channel, h) }()
	fc.ackSubscribe(t, channel)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// collector gathers deliveries of a handler.
type collector struct {
	mu  sync.Mutex
	got []string
}

func (col *collector) handle(ch string, data json.RawMessage) {
	col.mu.Lock()
	col.got = append(col.got, ch+" "+string(data))
	col.mu.Unlock()
}

func (col *collector) list() []string {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]string(nil), col.got...)
}

func (col *collector) waitN(t *testing.T, n int) []string {
	t.Helper()
	eventually(t, fmt.Sprintf("%d deliveries", n), func() bool { return len(col.list()) >= n })
	return col.list()
}

func TestHandshake(t *testing.T) {
	fs := newFakeServer(t)
	var connects, dials atomic.Int32
	dialer := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	c, fc := dial(t, fs, Options{Dialer: dialer, OnConnect: func(HandshakeStatus) { connects.Add(1) }})
	if dials.Load() != 1 {
		t.Fatalf("custom dialer used %d times", dials.Load())
	}
	if !c.Connected() || c.ID() != fc.id {
		t.Fatalf("Connected %v ID %q, want true %q", c.Connected(), c.ID(), fc.id)
	}
	st := c.Status()
	if st.PingTimeout != 30*time.Second || st.IsAuthenticated || st.URL != fs.URL {
		t.Fatalf("status %+v", st)
	}
	eventually(t, "OnConnect", func() bool { return connects.Load() == 1 })
}

func TestHandshakeExactFrameAndToken(t *testing.T) {
	fs := newFakeServer(t)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		c, err := Dial(ctx, Options{URLs: []string{fs.URL}, AuthToken: "tok.en"})
		if err == nil {
			c.Close()
		}
	}()
	fc := fs.accept(t)
	if f := fc.next(t); f != `{"event":"#handshake","data":{"authToken":"tok.en"},"cid":1}` {
		t.Fatalf("handshake frame %s", f)
	}
	fc.closeWith(1000, "")
	fc.waitClosed(t)

	fs2 := newFakeServer(t)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		c, err := Dial(ctx, Options{URLs: []string{fs2.URL}})
		if err == nil {
			c.Close()
		}
	}()
	fc2 := fs2.accept(t)
	if f := fc2.next(t); f != `{"event":"#handshake","data":{"authToken":null},"cid":1}` {
		t.Fatalf("handshake frame %s", f)
	}
	fc2.closeWith(1000, "")
	fc2.waitClosed(t)
}

func TestPingPong(t *testing.T) {
	fs := newFakeServer(t)
	_, fc := dial(t, fs, Options{})
	for range 3 {
		fc.send("")
		if f := fc.next(t); f != "" {
			t.Fatalf("pong %q, want empty frame", f)
		}
	}
}

func TestPingsKeepConnectionAlive(t *testing.T) {
	fs := newFakeServer(t)
	var disconnects atomic.Int32
	_, fc := dialPing(t, fs, Options{OnDisconnect: func(int, string) { disconnects.Add(1) }}, 150)
	for range 10 { // 500ms, well over 3 pingTimeouts
		fc.send("")
		fc.next(t)
		time.Sleep(50 * time.Millisecond)
	}
	if n := disconnects.Load(); n != 0 {
		t.Fatalf("%d disconnects while pinged", n)
	}
}

func TestPingTimeoutClosesWith4000AndReconnects(t *testing.T) {
	fs := newFakeServer(t)
	var mu sync.Mutex
	var codes []int
	_, fc := dialPing(t, fs, Options{OnDisconnect: func(code int, _ string) {
		mu.Lock()
		codes = append(codes, code)
		mu.Unlock()
	}}, 100)
	// no pings
	if code := fc.waitClosed(t); code != 4000 {
		t.Fatalf("client closed with %d, want 4000", code)
	}
	fc2 := fs.accept(t)
	if tok := fc2.handshake(t, 30000); tok != nil {
		t.Fatalf("token %v", tok)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(codes) != 1 || codes[0] != 4000 {
		t.Fatalf("OnDisconnect codes %v", codes)
	}
}

func TestSubscribeAndReceive(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	var col collector
	subscribe(t, c, fc, "news", col.handle)
	fc.send(`{"event":"#publish","data":{"channel":"chatroom","data":"not for us"}}`)
	fc.send(`{"event":"#publish","data":{"channel":"news","data":{"msg":"hello"}}}`)
	fc.send(`{"data":{"data":[1,2],"channel":"news"},"event":"#publish"}`) // other field order
	fc.send(`{"event":"#publish","data":{"channel":"n\u0065ws","data":"escaped channel"}}`)
	got := col.waitN(t, 3)
	want := []string{`news {"msg":"hello"}`, `news [1,2]`, `news "escaped channel"`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if ch := c.Channels(); len(ch) != 1 || ch[0] != "news" {
		t.Fatalf("Channels %v", ch)
	}
	// Subscribing again only replaces the handler.
	var col2 collector
	if err := c.Subscribe(context.Background(), "news", col2.handle); err != nil {
		t.Fatal(err)
	}
	fc.send(`{"event":"#publish","data":{"channel":"news","data":3}}`)
	col2.waitN(t, 1)
}

func TestSubscribeRejected(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	errc := make(chan error, 1)
	go func() { errc <- c.Subscribe(context.Background(), "denied.x", func(string, json.RawMessage) {}) }()
	cid, _ := fc.expectEvent(t, "#subscribe")
	fc.sendf(`{"rid":%d,"error":{"message":"Subscription to denied.x is denied","name":"SubscribeDeniedError","type":"inbound"}}`, cid)
	err := <-errc
	var e *Error
	if !errors.As(err, &e) || e.Name != "SubscribeDeniedError" || e.Message != "Subscription to denied.x is denied" || e.Fields["type"] != "inbound" {
		t.Fatalf("err %#v", err)
	}
	if ch := c.Channels(); len(ch) != 0 {
		t.Fatalf("Channels %v after rejection", ch)
	}
}

func TestSubscribeTimeout(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{AckTimeout: 100 * time.Millisecond})
	err := c.Subscribe(context.Background(), "slow", func(string, json.RawMessage) {})
	if !IsTimeout(err) {
		t.Fatalf("err %v, want TimeoutError", err)
	}
	fc.expectEvent(t, "#subscribe")
	if _, data := fc.expectEvent(t, "#unsubscribe"); data != "slow" {
		t.Fatalf("unsubscribe data %v", data)
	}
	if ch := c.Channels(); len(ch) != 0 {
		t.Fatalf("Channels %v", ch)
	}
}

func TestUnsubscribe(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	var col collector
	subscribe(t, c, fc, "news", col.handle)
	if err := c.Unsubscribe("news"); err != nil {
		t.Fatal(err)
	}
	if f := fc.next(t); f != `{"event":"#unsubscribe","data":"news"}` {
		t.Fatalf("unsubscribe frame %s", f)
	}
	fc.send(`{"event":"#publish","data":{"channel":"news","data":1}}`)
	fc.send("") // round trip: the publish was processed once the pong is back
	fc.next(t)
	if got := col.list(); len(got) != 0 {
		t.Fatalf("delivered after unsubscribe: %v", got)
	}
}

func TestPublishFrames(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	cases := []struct {
		data any
		want string
	}{
		{map[string]int{"a": 1}, `{"event":"#publish","data":{"channel":"news","data":{"a":1}}}`},
		{"hi \"you\"\n", `{"event":"#publish","data":{"channel":"news","data":"hi \"you\"\n"}}`},
		{json.RawMessage(`[1, 2]`), `{"event":"#publish","data":{"channel":"news","data":[1, 2]}}`},
		{nil, `{"event":"#publish","data":{"channel":"news","data":null}}`},
		{42, `{"event":"#publish","data":{"channel":"news","data":42}}`},
	}
	for _, tc := range cases {
		if err := c.Publish("news", tc.data); err != nil {
			t.Fatal(err)
		}
		if f := fc.next(t); f != tc.want {
			t.Fatalf("got %s, want %s", f, tc.want)
		}
	}
	if err := c.PublishRaw("news", json.RawMessage(`{"raw":true}`)); err != nil {
		t.Fatal(err)
	}
	if f := fc.next(t); f != `{"event":"#publish","data":{"channel":"news","data":{"raw":true}}}` {
		t.Fatalf("PublishRaw frame %s", f)
	}
	if err := c.Publish("news", json.RawMessage(`{broken`)); err == nil {
		t.Fatal("invalid raw JSON accepted")
	}
}

func TestPublishAck(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	errc := make(chan error, 1)
	go func() { errc <- c.PublishAck(context.Background(), "news", "x") }()
	f := fc.nextJSON(t)
	cid, _ := f["cid"].(float64)
	if f["event"] != "#publish" || cid == 0 || fmt.Sprint(f["data"]) != "map[channel:news data:x]" {
		t.Fatalf("frame %v", f)
	}
	fc.sendf(`{"rid":%d}`, int(cid))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	go func() { errc <- c.PublishAck(context.Background(), "readonly", "x") }()
	cidn, _ := fc.expectEvent(t, "#publish")
	fc.sendf(`{"rid":%d,"error":{"message":"Publishing to readonly is not allowed","name":"PublishForbiddenError"}}`, cidn)
	var e *Error
	if err := <-errc; !errors.As(err, &e) || e.Name != "PublishForbiddenError" {
		t.Fatalf("err %v", err)
	}
}

func TestPublishOrder(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	const n = 2000
	go func() {
		for i := range n {
			if err := c.Publish("seq", i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range n {
		want := fmt.Sprintf(`{"event":"#publish","data":{"channel":"seq","data":%d}}`, i)
		if f := fc.next(t); f != want {
			t.Fatalf("frame %d: %s", i, f)
		}
	}
}

func TestInvokeAndTransmit(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{AckTimeout: 200 * time.Millisecond})
	type res struct {
		data json.RawMessage
		err  error
	}
	rc := make(chan res, 1)
	invoke := func(event string, data any) {
		go func() {
			d, err := c.Invoke(context.Background(), event, data)
			rc <- res{d, err}
		}()
	}

	invoke("echo", map[string]int{"x": 1})
	cid, data := fc.expectEvent(t, "echo")
	if fmt.Sprint(data) != "map[x:1]" || cid == 0 {
		t.Fatalf("invoke cid %d data %v", cid, data)
	}
	fc.sendf(`{"rid":%d,"data":{"x":1}}`, cid)
	if r := <-rc; r.err != nil || string(r.data) != `{"x":1}` {
		t.Fatalf("invoke result %s %v", r.data, r.err)
	}

	invoke("noData", nil)
	if f := fc.nextJSON(t); len(f) != 2 { // no data field
		t.Fatalf("frame %v", f)
	} else {
		fc.sendf(`{"rid":%d}`, int(f["cid"].(float64)))
	}
	if r := <-rc; r.err != nil || r.data != nil {
		t.Fatalf("invoke result %s %v", r.data, r.err)
	}

	invoke("fail", "please")
	cid, _ = fc.expectEvent(t, "fail")
	fc.sendf(`{"rid":%d,"error":{"message":"Something went wrong","name":"CustomError","code":123}}`, cid)
	r := <-rc
	var e *Error
	if !errors.As(r.err, &e) || e.Name != "CustomError" || e.Message != "Something went wrong" || e.Code() != 123 {
		t.Fatalf("err %#v", r.err)
	}

	invoke("noReply", 1)
	fc.expectEvent(t, "noReply")
	if r := <-rc; !IsTimeout(r.err) || r.err.Error() != "TimeoutError: Event response for noReply event timed out" {
		t.Fatalf("err %v, want timeout", r.err)
	}

	// A canceled ctx wins over AckTimeout and is reported as such.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Invoke(ctx, "x", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}

	if err := c.Transmit("note", map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Transmit("note", nil); err != nil {
		t.Fatal(err)
	}
	if f := fc.next(t); f != `{"event":"note","data":{"a":1}}` {
		t.Fatalf("transmit frame %s", f)
	}
	if f := fc.next(t); f != `{"event":"note"}` {
		t.Fatalf("transmit frame %s", f)
	}
}

func TestBatchFromServer(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	var col collector
	subscribe(t, c, fc, "chan", col.handle)
	var events collector
	c.OnEvent("e", func(d json.RawMessage) { events.handle("e", d) })

	rc := make(chan json.RawMessage, 1)
	go func() {
		d, err := c.Invoke(context.Background(), "q", nil)
		if err != nil {
			t.Error(err)
		}
		rc <- d
	}()
	cid, _ := fc.expectEvent(t, "q")
	fc.sendf(`[{"rid":%d,"data":"ok"},{"event":"e","data":1},{"event":"e","data":2},{"event":"#publish","data":{"channel":"chan","data":"published while batching"}}]`, cid)
	if d := <-rc; string(d) != `"ok"` {
		t.Fatalf("invoke data %s", d)
	}
	if got := events.waitN(t, 2); fmt.Sprint(got) != "[e 1 e 2]" {
		t.Fatalf("events %v", got)
	}
	if got := col.waitN(t, 1); got[0] != `chan "published while batching"` {
		t.Fatalf("publish %v", got)
	}
}

func TestRawAndGarbageFramesAreIgnored(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	var col collector
	subscribe(t, c, fc, "news", col.handle)
	for _, f := range []string{"this is not json", `{"broken json`, `{"rid":999,"data":"nobody asked"}`, `{"rid":"1"}`, `[1,2`, `{"event":"#publish","data":{"channel":"news","data":1,"x":2}}`, "#1"} {
		fc.send(f)
	}
	fc.send(`{"event":"#publish","data":{"channel":"news","data":"still fine"}}`)
	got := col.waitN(t, 2)
	if got[0] != `news 1` || got[1] != `news "still fine"` {
		t.Fatalf("got %v", got)
	}
	if !c.Connected() {
		t.Fatal("disconnected by garbage")
	}
}

func TestAuthTokenSetAndRemove(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	var seen atomic.Int32
	c.OnEvent("#setAuthToken", func(json.RawMessage) { seen.Add(1) })

	fc.send(`{"event":"#setAuthToken","data":{"token":"t1"}}`)
	eventually(t, "token t1", func() bool { return c.AuthToken() == "t1" })
	if !c.Status().IsAuthenticated || seen.Load() != 1 {
		t.Fatal("not authenticated after #setAuthToken")
	}

	fc.send(`{"event":"#setAuthToken","cid":7,"data":{"token":"t2"}}`)
	if f := fc.next(t); f != `{"rid":7}` {
		t.Fatalf("reply %s", f)
	}
	if c.AuthToken() != "t2" {
		t.Fatalf("token %q", c.AuthToken())
	}

	fc.send(`{"event":"#setAuthToken","cid":8}`)
	if f := fc.next(t); f != `{"rid":8,"error":{"message":"No token data provided by #setAuthToken event","name":"InvalidMessageError"}}` {
		t.Fatalf("reply %s", f)
	}

	fc.send(`{"event":"#removeAuthToken"}`)
	eventually(t, "token removed", func() bool { return c.AuthToken() == "" })

	fc.send(`{"event":"#removeAuthToken","cid":9}`)
	if f := fc.next(t); f != `{"rid":9}` {
		t.Fatalf("reply %s", f)
	}
}

func TestAuthenticate(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	errc := make(chan error, 1)
	go func() { errc <- c.Authenticate(context.Background(), "good") }()
	cid, data := fc.expectEvent(t, "#authenticate")
	if data != "good" {
		t.Fatalf("data %v", data)
	}
	fc.sendf(`{"rid":%d,"data":{"isAuthenticated":true,"authError":null}}`, cid)
	if err := <-errc; err != nil || c.AuthToken() != "good" {
		t.Fatalf("err %v token %q", err, c.AuthToken())
	}

	go func() { errc <- c.Authenticate(context.Background(), "garbage") }()
	cid, _ = fc.expectEvent(t, "#authenticate")
	fc.sendf(`{"rid":%d,"error":{"message":"invalid token","name":"AuthTokenInvalidError","isBadToken":true}}`, cid)
	fc.send(`{"event":"#removeAuthToken"}`)
	var e *Error
	if err := <-errc; !errors.As(err, &e) || e.Name != "AuthTokenInvalidError" || e.Fields["isBadToken"] != true {
		t.Fatalf("err %v", err)
	}
	eventually(t, "token removed", func() bool { return c.AuthToken() == "" })

	if err := c.Deauthenticate(); err != nil {
		t.Fatal(err)
	}
	if f := fc.next(t); f != `{"event":"#removeAuthToken"}` {
		t.Fatalf("frame %s", f)
	}
}

func TestKickOut(t *testing.T) {
	fs := newFakeServer(t)
	var kicked atomic.Value
	c, fc := dial(t, fs, Options{OnKickOut: func(ch, msg string) { kicked.Store(ch + ":" + msg) }})
	var col collector
	subscribe(t, c, fc, "room1", col.handle)
	subscribe(t, c, fc, "room2", col.handle)
	fc.send(`{"event":"#kickOut","data":{"channel":"room1","message":"You have been kicked"}}`)
	eventually(t, "kickOut", func() bool { return kicked.Load() == "room1:You have been kicked" })
	if ch := c.Channels(); len(ch) != 1 || ch[0] != "room2" {
		t.Fatalf("Channels %v", ch)
	}
	fc.send(`{"event":"#publish","data":{"channel":"room1","data":1}}`)
	fc.send(`{"event":"#publish","data":{"channel":"room2","data":2}}`)
	if got := col.waitN(t, 1); len(got) != 1 || got[0] != "room2 2" {
		t.Fatalf("got %v", got)
	}
}

func TestServerInvoke(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{})
	c.OnInvoke("clientProc", func(d json.RawMessage) (any, error) { return map[string]int{"answer": 42}, nil })
	c.OnInvoke("clientProcErr", func(d json.RawMessage) (any, error) {
		return nil, &Error{Name: "ClientRefusal", Message: "Client refuses"}
	})
	fc.send(`{"event":"clientProc","cid":1,"data":{"q":1}}`)
	if f := fc.next(t); f != `{"rid":1,"data":{"answer":42}}` {
		t.Fatalf("reply %s", f)
	}
	fc.send(`{"event":"clientProcErr","cid":2,"data":{"q":2}}`)
	if f := fc.next(t); f != `{"rid":2,"error":{"message":"Client refuses","name":"ClientRefusal"}}` {
		t.Fatalf("reply %s", f)
	}
}

func TestReconnectToSecondURLResubscribes(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	var mu sync.Mutex
	var disconnects []int
	c, fa := dial(t, a, Options{
		URLs:       []string{a.URL, b.URL},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		OnDisconnect: func(code int, _ string) { mu.Lock(); disconnects = append(disconnects, code); mu.Unlock() },
	})
	var col collector
	subscribe(t, c, fa, "news", col.handle)
	subscribe(t, c, fa, "sport", col.handle)
	fa.send(`{"event":"#setAuthToken","data":{"token":"from-a"}}`)
	eventually(t, "token", func() bool { return c.AuthToken() == "from-a" })

	// A pending call when node A dies fails with a BadConnectionError.
	errc := make(chan error, 1)
	go func() { _, err := c.Invoke(context.Background(), "slow", nil); errc <- err }()
	fa.expectEvent(t, "slow")

	a.Close() // stop listening and drop the TCP connection
	err := <-errc
	var e *Error
	if !errors.As(err, &e) || e.Name != NameBadConnection || e.Code() != 1006 {
		t.Fatalf("pending call err %#v", err)
	}

	fb := b.accept(t)
	if tok := fb.handshake(t, 30000); tok != "from-a" {
		t.Fatalf("handshake token %v", tok)
	}
	fb.ackSubscribe(t, "news") // in subscription order
	fb.ackSubscribe(t, "sport")
	fb.send(`{"event":"#publish","data":{"channel":"sport","data":"on b"}}`)
	if got := col.waitN(t, 1); got[0] != `sport "on b"` {
		t.Fatalf("got %v", got)
	}
	eventually(t, "connected", c.Connected)
	if c.ID() != fb.id {
		t.Fatalf("ID %q", c.ID())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(disconnects) != 1 || disconnects[0] != 1006 {
		t.Fatalf("disconnects %v", disconnects)
	}
}

func TestReconnectAfterServerClose(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{MinBackoff: 10 * time.Millisecond})
	var col collector
	subscribe(t, c, fc, "news", col.handle)
	// A subscribe made while disconnected is sent after the next handshake.
	fc.closeWith(4100, "custom reason")
	if code := fc.waitClosed(t); code != 4100 {
		t.Fatalf("echoed close code %d", code)
	}
	eventually(t, "disconnected", func() bool { return !c.Connected() })
	errc := make(chan error, 1)
	go func() { errc <- c.Subscribe(context.Background(), "later", col.handle) }()
	fc2 := fs.accept(t)
	fc2.handshake(t, 30000)
	fc2.ackSubscribe(t, "news")
	fc2.ackSubscribe(t, "later")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A re-subscription rejected after a reconnect reaches OnSubscribeFail.
}

func TestResubscribeRejectedCallsOnSubscribeFail(t *testing.T) {
	fs := newFakeServer(t)
	failed := make(chan string, 1)
	c, fc := dial(t, fs, Options{MinBackoff: 10 * time.Millisecond, OnSubscribeFail: func(ch string, err error) { failed <- ch + ": " + err.Error() }})
	subscribe(t, c, fc, "x", func(string, json.RawMessage) {})
	fc.closeWith(4000, "")
	fc2 := fs.accept(t)
	fc2.handshake(t, 30000)
	cid, _ := fc2.expectEvent(t, "#subscribe")
	fc2.sendf(`{"rid":%d,"error":{"name":"BrokerError","message":"nope"}}`, cid)
	select {
	case got := <-failed:
		if got != "x: BrokerError: nope" {
			t.Fatal(got)
		}
	case <-time.After(waitFor):
		t.Fatal("OnSubscribeFail not called")
	}
	if len(c.Channels()) != 0 {
		t.Fatal(c.Channels())
	}
}

func TestInvokeWaitsForConnection(t *testing.T) {
	fs := newFakeServer(t)
	c, fc := dial(t, fs, Options{MinBackoff: 50 * time.Millisecond})
	fc.closeWith(4100, "")
	eventually(t, "disconnected", func() bool { return !c.Connected() })
	if err := c.Publish("x", 1); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Publish while disconnected: %v", err)
	}
	rc := make(chan error, 1)
	go func() { _, err := c.Invoke(context.Background(), "whoami", nil); rc <- err }()
	fc2 := fs.accept(t)
	fc2.handshake(t, 30000)
	cid, _ := fc2.expectEvent(t, "whoami")
	fc2.sendf(`{"rid":%d}`, cid)
	if err := <-rc; err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeRejection(t *testing.T) {
	// statusCode >= 4500: Dial fails at once with the server's error.
	fs := newFakeServer(t)
	errc := make(chan error, 1)
	go func() {
		_, err := Dial(context.Background(), Options{URLs: []string{fs.URL}})
		errc <- err
	}()
	fc := fs.accept(t)
	cid, _ := fc.expectEvent(t, "#handshake")
	fc.sendf(`{"rid":%d,"error":{"message":"Banned forever","name":"BannedError","statusCode":4501}}`, cid)
	var e *Error
	if err := <-errc; !errors.As(err, &e) || e.Name != "BannedError" || e.StatusCode() != 4501 {
		t.Fatalf("err %v", err)
	}
	if code := fc.waitClosed(t); code != 4501 {
		t.Fatalf("client closed with %d", code)
	}

	// Otherwise the client closes with the statusCode and retries.
	go func() {
		c, err := Dial(context.Background(), Options{URLs: []string{fs.URL}, MinBackoff: 10 * time.Millisecond})
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	fc = fs.accept(t)
	cid, _ = fc.expectEvent(t, "#handshake")
	fc.sendf(`{"rid":%d,"error":{"message":"Go away","name":"HandshakeRejectedError","statusCode":4008}}`, cid)
	if code := fc.waitClosed(t); code != 4008 {
		t.Fatalf("client closed with %d", code)
	}
	fc = fs.accept(t)
	fc.handshake(t, 30000)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestDialFailsWhenNothingListens(t *testing.T) {
	fs := newFakeServer(t)
	url := fs.URL
	fs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, Options{URLs: []string{url}, MinBackoff: 10 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	var de *dialError
	if !errors.As(err, &de) {
		t.Fatalf("err %v does not name the last connection failure", err)
	}
}

func TestCloseSends1000AndLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fs := newFakeServer(t)
	var disconnected atomic.Int32
	c, fc := dial(t, fs, Options{OnDisconnect: func(code int, _ string) {
		if code == 1000 {
			disconnected.Add(1)
		}
	}})
	var col collector
	subscribe(t, c, fc, "news", col.handle)
	rc := make(chan error, 1)
	go func() { _, err := c.Invoke(context.Background(), "pending", nil); rc <- err }()
	fc.expectEvent(t, "pending")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if code := fc.waitClosed(t); code != 1000 {
		t.Fatalf("close code %d", code)
	}
	if err := <-rc; !IsBadConnection(err) {
		t.Fatalf("pending call err %v", err)
	}
	if disconnected.Load() != 1 {
		t.Fatal("OnDisconnect(1000) not called")
	}
	if err := c.Publish("news", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := c.Invoke(context.Background(), "x", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Invoke after Close: %v", err)
	}
	if err := c.Subscribe(context.Background(), "x", col.handle); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	c.Close() // idempotent
	fs.expectNoConn(t, 100*time.Millisecond)
	fs.Close()
}

func TestCloseWhileReconnecting(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fs := newFakeServer(t)
	c, _ := dial(t, fs, Options{MinBackoff: time.Hour, MaxBackoff: time.Hour})
	fs.Close()
	eventually(t, "disconnected", func() bool { return !c.Connected() })
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Close blocked during backoff")
	}
}

func TestRawPublishHook(t *testing.T) {
	fs := newFakeServer(t)
	var raw collector
	c, fc := dial(t, fs, Options{RawPublish: func(ch, data []byte) bool {
		raw.handle(string(ch), json.RawMessage(string(data)))
		return string(ch) == "consumed"
	}})
	var col collector
	subscribe(t, c, fc, "consumed", col.handle)
	subscribe(t, c, fc, "passed", col.handle)
	fc.send(`{"event":"#publish","data":{"channel":"consumed","data":1}}`)
	fc.send(`{"event":"#publish","data":{"channel":"passed","data":2}}`)
	if got := raw.waitN(t, 2); fmt.Sprint(got) != "[consumed 1 passed 2]" {
		t.Fatalf("raw %v", got)
	}
	if got := col.waitN(t, 1); fmt.Sprint(got) != "[passed 2]" {
		t.Fatalf("handlers %v", got)
	}
}

// autoServe answers everything on fc (handshake, subscribe, invokes, pings
// aside) until it has read limit frames, then drops the TCP connection.
func autoServe(fc *fakeConn, limit int) {
	for i := 0; i < limit; i++ {
		f, ok := <-fc.in
		if !ok {
			return
		}
		var m map[string]any
		if json.Unmarshal([]byte(f), &m) != nil {
			continue
		}
		cid, _ := m["cid"].(float64)
		if cid == 0 {
			continue
		}
		if m["event"] == "#handshake" {
			fc.sendf(`{"rid":%d,"data":{"id":%q,"pingTimeout":30000,"isAuthenticated":false}}`, int(cid), fc.id)
			continue
		}
		fc.sendf(`{"rid":%d}`, int(cid))
		if m["event"] == "#subscribe" {
			ch := m["data"].(map[string]any)["channel"].(string)
			fc.sendf(`{"event":"#publish","data":{"channel":%q,"data":"hello"}}`, ch)
		}
	}
	fc.kill()
}

// Calls made from many goroutines while the connection keeps dropping all
// return, with nil or a connection error, and nothing races or leaks.
func TestConcurrentCallsAcrossReconnects(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fs := newFakeServer(t)
	var served sync.WaitGroup
	stop := make(chan struct{})
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			select {
			case fc := <-fs.conns:
				served.Add(1)
				go func() { defer served.Done(); autoServe(fc, 40) }()
			case <-stop:
				return
			}
		}
	}()
	c, err := Dial(context.Background(), Options{URLs: []string{fs.URL}, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok, failed atomic.Int32
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := fmt.Sprintf("ch%d", g)
			for i := range 30 {
				var err error
				switch i % 4 {
				case 0:
					err = c.Subscribe(context.Background(), ch, func(string, json.RawMessage) {})
				case 1:
					err = c.PublishAck(context.Background(), ch, i)
				case 2:
					_, err = c.Invoke(context.Background(), "x", i)
				case 3:
					err = c.Unsubscribe(ch)
				}
				if err == nil {
					ok.Add(1)
				} else if IsBadConnection(err) || IsTimeout(err) || errors.Is(err, ErrUnsubscribed) {
					failed.Add(1)
				} else {
					t.Errorf("unexpected error %v", err)
				}
				_ = c.Publish(ch, i)
			}
		}()
	}
	wg.Wait()
	c.Close()
	close(stop)
	fs.Close()
	served.Wait()
	t.Logf("%d calls succeeded, %d failed with connection errors", ok.Load(), failed.Load())
	if ok.Load() == 0 {
		t.Fatal("no call succeeded")
	}
}

// TestRetryAfterIsHonoured: a node pacing a reconnect storm answers 503 with Retry-After; the
// client comes back no sooner than asked (and no later than half as late again), even when
// its own backoff is shorter, rather than in a wave at its backoff.
func TestRetryAfterIsHonoured(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "paced", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, Options{URLs: []string{"ws" + strings.TrimPrefix(srv.URL, "http")}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err == nil {
		t.Fatal("dialled a server that only answers 503")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(at) < 2 || len(at) > 3 {
		t.Fatalf("%d attempts in 2.5 s against Retry-After: 1", len(at))
	}
	for i := 1; i < len(at); i++ {
		if d := at[i].Sub(at[i-1]); d < time.Second || d > 1600*time.Millisecond {
			t.Fatalf("attempt %d came %v after the one before, asked for 1 s", i, d)
		}
	}
}
