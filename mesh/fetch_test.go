package mesh

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// A fetch reaches the peer's handler with the request and a bound that fits a frame, and the
// reply comes back; past the peer's rate it is refused at once; a peer without a handler
// refuses; an unknown peer is an error; a reply from another peer than the one asked, or to
// no request, is ignored.
func TestFetch(t *testing.T) {
	var gotMax atomic.Int64
	a := startMesh(t, "a", nil, func(c *Config) {
		c.FetchRate = 1 // one a second: the second fetch below is refused however slow the run
		c.Fetch = func(ch string, req []byte, max int) []byte {
			gotMax.Store(int64(max))
			return append([]byte(ch+":"), req...)
		}
	})
	b := startMesh(t, "b", []string{a.GossipEndpoint()})
	waitFor(t, 10*time.Second, "ready", func() bool { return a.Ready() && b.Ready() })
	if a.Alone() || b.Alone() {
		t.Fatal("a node with a peer says it is alone")
	}
	if c := startMesh(t, "c", nil); !c.Alone() {
		t.Fatal("a node without peers says it is not alone")
	}
	b.AddInterest("x")
	waitInterest(t, []*testNode{a, b}, "b", "x", true)
	if w := a.Wanting("x"); len(w) != 1 || w[0] != b.SerfName() {
		t.Fatalf("a.Wanting(x) = %v, want [%s]", w, b.SerfName())
	}
	if w := b.Wanting("x"); len(w) != 0 {
		t.Fatalf("b.Wanting(x) = %v, want none", w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := b.Fetch(ctx, a.SerfName(), "chan", []byte("req"))
	if err != nil || string(got) != "chan:req" {
		t.Fatalf("fetch: %q, %v", got, err)
	}
	if m := gotMax.Load(); m <= 0 || m > int64(a.frameBudget()) {
		t.Fatalf("handler's bound %d, frame budget %d", m, a.frameBudget())
	}
	if _, err := b.Fetch(ctx, a.SerfName(), "chan", nil); !errors.Is(err, ErrFetchRefused) {
		t.Fatalf("second fetch within a second: %v, want refused", err)
	}
	if _, err := a.Fetch(ctx, b.SerfName(), "chan", nil); !errors.Is(err, ErrFetchRefused) {
		t.Fatalf("fetch from a node without a handler: %v, want refused", err)
	}
	if _, err := b.Fetch(ctx, "nobody-1", "chan", nil); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	if _, err := b.Fetch(ctx, a.SerfName(), "", nil); err == nil {
		t.Fatal("empty channel accepted")
	}
	// A reply must come from the peer asked: one injected as if from b is ignored.
	b.fetch.mu.Lock()
	b.fetch.next++
	id := b.fetch.next
	pf := &pendingFetch{peer: a.SerfName(), reply: make(chan *meshpb.FetchReply, 1)}
	b.fetch.pending[id] = pf
	b.fetch.mu.Unlock()
	b.mu.RLock()
	var fromOther *peer
	for _, p := range a.peers {
		fromOther = p // a's peer object for b: not the one b asked
	}
	b.mu.RUnlock()
	b.fetchReplied(fromOther, &meshpb.FetchReply{Id: id, Body: []byte("forged")})
	b.fetchReplied(fromOther, &meshpb.FetchReply{Id: id + 100, Body: []byte("stray")})
	select {
	case r := <-pf.reply:
		t.Fatalf("reply from the wrong peer accepted: %q", r.Body)
	default:
	}
	time.Sleep(1100 * time.Millisecond) // a's limiter refills
	if got, err := b.Fetch(ctx, a.SerfName(), "chan", bytes.Repeat([]byte{1}, 10)); err != nil || len(got) != 15 {
		t.Fatalf("after the limiter refilled: %q, %v", got, err)
	}
	// A fetch whose reply does not come in time ends with its context, and leaves nothing
	// pending.
	a.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := b.Fetch(short, a.SerfName(), "chan", nil); err == nil {
		t.Fatal("fetch from a closed peer succeeded")
	}
	b.fetch.mu.Lock()
	left := len(b.fetch.pending)
	b.fetch.mu.Unlock()
	if left != 1 { // the injected one only
		t.Fatalf("%d fetches left pending", left)
	}
}

// A member that floods a peer with fetch requests as large as a frame carries, from many
// goroutines at once, gets at most the peer's rate answered and the rest refused, while the
// peer's publications to another member go on: all arrive, in order. (Requests the flooding
// member's own send queue drops end with its own timeout: its problem, counted.)
func TestFetchFloodFromAMember(t *testing.T) {
	const rate, pubs = 20, 1000
	var served atomic.Int64
	a := startMesh(t, "a", nil, func(c *Config) {
		c.FetchRate = rate
		c.Fetch = func(_ string, req []byte, _ int) []byte {
			served.Add(1)
			return req[:min(len(req), 16)]
		}
	})
	b := startMesh(t, "b", []string{a.GossipEndpoint()})
	c := startMesh(t, "c", []string{a.GossipEndpoint()})
	waitFor(t, 10*time.Second, "ready", func() bool {
		return a.Ready() && b.Ready() && c.Ready() && len(a.Status().Peers) == 2
	})
	c.AddInterest("live")
	waitInterest(t, []*testNode{a}, "c", "live", true)

	big := bytes.Repeat([]byte{0xff}, b.frameBudget()-len("flood")-1024)
	start := time.Now()
	stop := make(chan struct{})
	var sent, answered, refused, timedOut, failed atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := b.Fetch(ctx, a.SerfName(), "flood", big)
				cancel()
				sent.Add(1)
				switch {
				case err == nil:
					answered.Add(1)
				case errors.Is(err, ErrFetchRefused):
					refused.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
					timedOut.Add(1)
				default:
					failed.Add(1)
				}
			}
		}()
	}
	for i := range pubs {
		a.Publish("live", []byte(strconv.Itoa(i)))
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	took := time.Since(start)
	waitFor(t, 10*time.Second, "c receives every publication", func() bool { return c.rec.count("live") >= pubs })
	for i, got := range c.rec.get("live") {
		if got != strconv.Itoa(i) {
			t.Fatalf("publication %d arrived as %q: out of order or duplicated", i, got)
		}
	}
	t.Logf("%d fetches of %d KiB in %v: %d answered, %d refused, %d timed out, %d failed", sent.Load(), len(big)>>10, took.Round(time.Millisecond), answered.Load(), refused.Load(), timedOut.Load(), failed.Load())
	if most := int64(rate*took.Seconds()) + rate + 1; served.Load() > most {
		t.Fatalf("the handler ran %d times in %v at %d/s (at most %d)", served.Load(), took, rate, most)
	}
	if refused.Load() == 0 || failed.Load() != 0 {
		t.Fatalf("%d refused, %d failed otherwise than by timing out (want refusals, no other failure)", refused.Load(), failed.Load())
	}
}
