package wsfront

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sockmesh/sockmesh/scproto"
)

// fanoutBroker is memBroker that also delivers within a reader's fanout, as node.Broker does.
type fanoutBroker struct{ *memBroker }

func (b fanoutBroker) PublishIn(fo *Fanout, ch string, data json.RawMessage) {
	frame := scproto.EncodePublish(ch, data)
	for _, s := range b.targets(ch) {
		s.DeliverIn(fo, frame, time.Time{}, nil)
	}
}

func startFanoutFront(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	b := fanoutBroker{&memBroker{subs: map[string]map[*Socket]bool{}}}
	srv := New(cfg, b, nil)
	hs := httptest.NewServer(srv)
	t.Cleanup(srv.Close)
	t.Cleanup(hs.Close)
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http") + "/socketcluster/"
}

// subscriberAndPublisher starts a fanout front (set up by setup, if any, before anyone
// connects) and connects a client subscribed to "a" (c, its socket sub) and a publisher p.
func subscriberAndPublisher(t *testing.T, cfg Config, setup ...func(*Server)) (c *rawClient, sub *Socket, p *rawClient) {
	t.Helper()
	srv, url := startFanoutFront(t, cfg)
	for _, f := range setup {
		f(srv)
	}
	c = dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	sub = socketOf(t, srv)
	p = dialRaw(t, url)
	p.handshake()
	return c, sub, p
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
	}
}

// socketOf returns the server's socket that is not one of known (the one just opened).
func socketOf(t *testing.T, srv *Server, known ...*Socket) *Socket {
	t.Helper()
next:
	for _, s := range srv.Sockets() {
		for _, k := range known {
			if s == k {
				continue next
			}
		}
		return s
	}
	t.Fatal("no new socket")
	return nil
}

// A client's publications to subscribers whose writers are idle are written by the
// publisher's own reader once it has handled the burst: no writer goroutine is woken or
// started for them (one goroutine switch per delivery less). Without a write window
// (WriteDelay negative) the writers still do it: their lagging behind is what coalesces a busy
// connection's publications then.
func TestPublicationsAreWrittenByThePublishersReader(t *testing.T) {
	for _, delay := range []time.Duration{20 * time.Millisecond, -1} {
		t.Run("delay="+delay.String(), func(t *testing.T) {
			srv, url := startFanoutFront(t, Config{WriteDelay: delay})
			var subs []*rawClient
			var socks []*Socket
			for _, ch := range []string{"a", "b"} {
				c := dialRaw(t, url)
				c.handshake()
				c.send(`{"event":"#subscribe","data":{"channel":"` + ch + `"},"cid":2}`)
				c.expect(`{"rid":2}`)
				subs = append(subs, c)
				socks = append(socks, socketOf(t, srv, socks...))
			}
			p := dialRaw(t, url)
			p.handshake()
			// The subscribers' readers have written their answers and let go of the
			// connections (on a loaded machine that can come a moment after the client has
			// read them).
			waitFor(t, "subscribers' readers done writing", func() bool {
				for _, s := range socks {
					if writerRuns(s) {
						return false
					}
				}
				return true
			})
			p.send(`[{"event":"#publish","data":{"channel":"a","data":1},"cid":2},{"event":"#publish","data":{"channel":"b","data":2},"cid":3}]`)
			p.expect(`{"rid":2}`)
			p.expect(`{"rid":3}`)
			subs[0].expect(`"data":1}`)
			subs[1].expect(`"data":2}`)
			// A writer goroutine started for a subscriber stays (idle) for writerLinger.
			time.Sleep(writerLinger / 4)
			for i, s := range socks {
				if runs := writerRuns(s); runs != (delay < 0) {
					t.Errorf("subscriber %d: writer goroutine running %v, want %v", i, runs, delay < 0)
				}
			}
		})
	}
}

// writerRuns: s has a writer goroutine (or a fanout still to write it).
func writerRuns(s *Socket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writing || s.inFanout
}

// Publications written from a fanout count as writes for the write window: a subscriber
// written a moment ago gets the next publications together once the window is over, as it
// does from its own writer (TestWriteDelayCoalescesPublicationsButNotResponses).
func TestFannedOutPublicationsKeepTheWriteWindow(t *testing.T) {
	const delay = 400 * time.Millisecond
	c, sub, p := subscriberAndPublisher(t, Config{WriteDelay: delay, WriteDelayLoad: -1, ArrayFrames: true}) // "together" = one array frame
	c.rawBatches = true
	time.Sleep(delay) // quiet

	t0 := time.Now()
	p.send(`{"event":"#publish","data":{"channel":"a","data":1}}`)
	if m, err := c.next(); err != nil || !strings.Contains(m, `"data":1}`) || time.Since(t0) > delay/2 {
		t.Fatalf("first publication on a quiet connection: %q %v after %v, want at once", m, err, time.Since(t0))
	}
	t1 := time.Now()
	p.send(`{"event":"#publish","data":{"channel":"a","data":2}}`)
	time.Sleep(20 * time.Millisecond) // a burst of its own
	p.send(`{"event":"#publish","data":{"channel":"a","data":3}}`)
	m, err := c.next()
	if err != nil || !strings.HasPrefix(m, "[") || !strings.Contains(m, `"data":2}`) || !strings.Contains(m, `"data":3}`) {
		t.Fatalf("publications within the window: %q %v, want one array frame with both", m, err)
	}
	if el := time.Since(t1); el < delay/2 {
		t.Fatalf("publications within the window written after %v, want them held about %v", el, delay)
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.inFanout || sub.lent {
		t.Fatalf("subscriber left in a fanout (%v) or lent (%v)", sub.inFanout, sub.lent)
	}
}

// Publications through fanouts (several publishers' readers), through the writer (the
// server's own publications) and replies, all to the same subscribers at once: every
// frame arrives, each source's in its order. Run under -race, this is the check that
// readers borrowing a connection and its writer never write at the same time.
func TestFanoutsWritersAndRepliesInterleaveInOrder(t *testing.T) {
	srv, url := startFanoutFront(t, Config{WriteDelay: time.Millisecond})
	const nSubs, nPubs, perPub = 4, 3, 300
	subs := make([]*rawClient, nSubs)
	for i := range subs {
		subs[i] = dialRaw(t, url)
		subs[i].handshake()
		subs[i].send(`{"event":"#subscribe","data":{"channel":"all"},"cid":2}`)
		subs[i].expect(`{"rid":2}`)
	}
	pubs := make([]*rawClient, nPubs)
	for i := range pubs {
		pubs[i] = dialRaw(t, url)
		pubs[i].handshake()
	}
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= perPub; k++ {
				msg := fmt.Sprintf(`{"event":"#publish","data":{"channel":"all","data":"p%d-%d"}}`, i, k)
				if err := p.ws.WriteMessage(1, []byte(msg)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// The subscribers make calls meanwhile: their replies meet the publications. (The test
	// runs shorter than the ping interval, so these are the clients' only writes.)
	for _, c := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 3; k < 23; k++ {
				if err := c.ws.WriteMessage(1, []byte(`{"event":"#subscribe","data":{"channel":"x`+strconv.Itoa(k)+`"},"cid":`+strconv.Itoa(k)+`}`)); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 1; k <= perPub; k++ {
			srv.broker.Publish("all", json.RawMessage(`"s-`+strconv.Itoa(k)+`"`))
		}
	}()
	got := make([]map[string]int, nSubs)
	replies := make([]int, nSubs)
	var rg sync.WaitGroup
	for i, c := range subs {
		got[i] = map[string]int{}
		rg.Add(1)
		go func() {
			defer rg.Done()
			for n := 0; n < (nPubs+1)*perPub; {
				m, err := c.next()
				if err != nil {
					t.Errorf("subscriber %d after %d publications: %v", i, n, err)
					return
				}
				if !strings.Contains(m, `"#publish"`) {
					replies[i]++
					continue
				}
				var pub struct{ Data struct{ Data string } }
				if err := json.Unmarshal([]byte(m), &pub); err != nil {
					t.Errorf("bad frame %s", m)
					return
				}
				src, seqS, _ := strings.Cut(pub.Data.Data, "-")
				seq, _ := strconv.Atoi(seqS)
				if seq != got[i][src]+1 {
					t.Errorf("subscriber %d: %s after %d from %s", i, pub.Data.Data, got[i][src], src)
					return
				}
				got[i][src] = seq
				n++
			}
		}()
	}
	wg.Wait()
	rg.Wait()
	for i := range subs {
		for replies[i] < 20 {
			m, err := subs[i].next()
			if err != nil || !strings.Contains(m, `"rid"`) {
				t.Fatalf("subscriber %d after %d replies: %q %v", i, replies[i], m, err)
			}
			replies[i]++
		}
	}
}

// A writer woken while a reader writes in its place (the connection is lent) waits until it
// is given the connection back: frames queued during the borrowed write go out after it.
func TestWriterWaitsWhileItsConnectionIsLent(t *testing.T) {
	c, sub, p := subscriberAndPublisher(t, Config{WriteDelay: time.Millisecond})
	srv := sub.srv

	// A publication from the server starts the subscriber's writer, which then idles.
	srv.broker.Publish("a", json.RawMessage(`0`))
	c.expect(`"data":0}`)
	waitFor(t, "the writer to idle", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.writing && sub.idleWait
	})
	time.Sleep(5 * time.Millisecond) // past the write window

	var once sync.Once
	hook := func(s *Socket) {
		if s != sub {
			return
		}
		once.Do(func() {
			// Queued and the writer woken while the publisher's reader holds frame 1.
			s.Deliver(scproto.EncodePublish("a", json.RawMessage(`2`)))
			time.Sleep(50 * time.Millisecond) // a writer that did not wait would write 2 now
		})
	}
	testBorrowedWrite.Store(&hook)
	t.Cleanup(func() { testBorrowedWrite.Store(nil) })
	p.send(`{"event":"#publish","data":{"channel":"a","data":1}}`)
	c.expect(`"data":1}`)
	c.expect(`"data":2}`)
}

// Handlers and middleware may take their time: publications the reader has collected are
// written before it calls one, not after (a publication followed by a slow call in the same
// burst is not held back by the call).
func TestFanoutIsWrittenBeforeSlowHandlerOrMiddleware(t *testing.T) {
	const slow = time.Second
	c, _, p := subscriberAndPublisher(t, Config{WriteDelay: 20 * time.Millisecond}, func(srv *Server) {
		srv.HandleInvoke("slow", func(context.Context, *Invocation) (any, error) {
			time.Sleep(slow)
			return nil, nil
		})
		srv.UsePublish(func(_ context.Context, r *PublishRequest) error {
			if r.Channel == "slow" {
				time.Sleep(slow)
			}
			return nil
		})
		srv.UseSubscribe(func(_ context.Context, r *SubscribeRequest) error {
			if r.Channel == "slow" {
				time.Sleep(slow)
			}
			return nil
		})
	})
	for _, then := range []string{
		`{"event":"slow","data":null,"cid":5}`,
		`{"event":"#publish","data":{"channel":"slow","data":0},"cid":6}`,
		`{"event":"#subscribe","data":{"channel":"slow"},"cid":7}`,
	} {
		t0 := time.Now()
		p.send(`[{"event":"#publish","data":{"channel":"a","data":1}},` + then + `]`)
		c.expect(`"data":1}`)
		if el := time.Since(t0); el > slow/2 {
			t.Errorf("publication before %s arrived after %v, want before the call's %v", then, el, slow)
		}
		p.expect(`"rid"`)
		time.Sleep(30 * time.Millisecond) // past the write window
	}
}

// spreadBroker delivers every publication through a spread (NewSpread), as node.Broker does
// for channels of SpreadMin subscribers and more.
type spreadBroker struct{ *memBroker }

func (b spreadBroker) PublishIn(_ *Fanout, ch string, data json.RawMessage) {
	frame := scproto.EncodePublish(ch, data)
	sp := NewSpread()
	for _, s := range b.targets(ch) {
		s.DeliverIn(sp, frame, time.Time{}, nil)
	}
	sp.Start()
}

// TestSpreadsDeliverEverythingInOrder: several publishers' bursts, each publication a spread
// of its own written while the previous ones are still being written, reach every subscriber
// once and in each publisher's order; a subscriber that stops reading holds nobody up.
func TestSpreadsDeliverEverythingInOrder(t *testing.T) {
	const subs, pubs, each = 40, 4, 300
	b := spreadBroker{&memBroker{subs: map[string]map[*Socket]bool{}}}
	srv := New(Config{}, b, nil)
	hs := httptest.NewServer(srv)
	t.Cleanup(srv.Close)
	t.Cleanup(hs.Close)
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/socketcluster/"
	var clients []*rawClient
	for i := range subs + 1 { // the last one stops reading
		c := dialRaw(t, url)
		c.handshake()
		c.send(fmt.Sprintf(`{"event":"#subscribe","data":{"channel":"a"},"cid":%d}`, 2+i))
		c.expect(fmt.Sprintf(`{"rid":%d}`, 2+i))
		clients = append(clients, c)
	}
	stuck := clients[subs]
	_ = stuck.ws.UnderlyingConn().(interface{ SetReadBuffer(int) error }).SetReadBuffer(4 << 10)
	clients = clients[:subs]
	var wg sync.WaitGroup
	for p := range pubs {
		pc := dialRaw(t, url)
		pc.handshake()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// 200 bytes of padding: the stuck subscriber's buffers fill within the run.
				if err := pc.ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"event":"#publish","data":{"channel":"a","data":"%d-%d-%0200d"}}`, p, i, 0)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	errs := make(chan error, subs)
	for _, c := range clients {
		go func() {
			next := make([]int, pubs)
			for n := 0; n < pubs*each; n++ {
				m, err := c.next()
				if err != nil {
					errs <- fmt.Errorf("after %d publications: %v", n, err)
					return
				}
				var p, i int
				at := strings.Index(m, `"data":"`)
				if at < 0 {
					n--
					continue
				}
				if _, err := fmt.Sscanf(m[at+len(`"data":"`):], "%d-%d-", &p, &i); err != nil {
					errs <- fmt.Errorf("unexpected packet %s", m)
					return
				}
				if i != next[p] {
					errs <- fmt.Errorf("publisher %d: got %d, want %d", p, i, next[p])
					return
				}
				next[p]++
			}
			errs <- nil
		}()
	}
	wg.Wait()
	for range subs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
