package node

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

type recSub struct {
	mu     sync.Mutex
	frames []string
	refuse bool
}

func (r *recSub) Deliver(f []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse {
		return false
	}
	r.frames = append(r.frames, string(f))
	return true
}

func (r *recSub) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.frames...)
}

// interestLog records transitions as "+ch" / "-ch".
type interestLog struct {
	mu  sync.Mutex
	log []string
}

func (l *interestLog) AddInterest(ch string) {
	l.mu.Lock()
	l.log = append(l.log, "+"+ch)
	l.mu.Unlock()
}
func (l *interestLog) RemoveInterest(ch string) {
	l.mu.Lock()
	l.log = append(l.log, "-"+ch)
	l.mu.Unlock()
}

type fwdLog struct{ n atomic.Int64 }

func (f *fwdLog) Publish(string, []byte)                     { f.n.Add(1) }
func (f *fwdLog) PublishWithPosition(string, []byte, []byte) { f.n.Add(1) }

func TestBrokerInterestTransitions(t *testing.T) {
	il := &interestLog{}
	b := NewBroker(4, il, nil, nil)
	a, c := &recSub{}, &recSub{}
	steps := []struct {
		do   func()
		want []string
	}{
		{func() { b.SubscribeSub(a, "chat") }, []string{"+chat"}},
		{func() { b.SubscribeSub(c, "chat") }, []string{"+chat"}},
		{func() { b.SubscribeSub(a, "chat") }, []string{"+chat"}}, // duplicate is a no-op
		{func() { b.UnsubscribeSub(a, "chat") }, []string{"+chat"}},
		{func() { b.UnsubscribeSub(a, "chat") }, []string{"+chat"}}, // not subscribed
		{func() { b.UnsubscribeSub(c, "chat") }, []string{"+chat", "-chat"}},
		{func() { b.SubscribeSub(a, "chat") }, []string{"+chat", "-chat", "+chat"}},
	}
	for i, s := range steps {
		s.do()
		if fmt.Sprint(il.log) != fmt.Sprint(s.want) {
			t.Fatalf("step %d: transitions %v, want %v", i, il.log, s.want)
		}
	}
}

func TestBrokerDeliversExactChannelOnceAndForwards(t *testing.T) {
	fw := &fwdLog{}
	b := NewBroker(8, nil, fw, nil)
	chat, room, both := &recSub{}, &recSub{}, &recSub{}
	b.SubscribeSub(chat, "chat")
	b.SubscribeSub(room, "chatroom")
	b.SubscribeSub(both, "chat")
	b.SubscribeSub(both, "chatroom")
	b.Publish("chat", json.RawMessage(`1`))
	b.Publish("chatroom", json.RawMessage(`2`))
	b.Publish("nobody", json.RawMessage(`3`))
	b.DeliverRemote("chat", []byte(`4`), nil)
	if got := chat.got(); len(got) != 2 || got[0] != `{"event":"#publish","data":{"channel":"chat","data":1}}` {
		t.Fatalf("chat got %v", got)
	}
	if got := room.got(); len(got) != 1 || got[0] != `{"event":"#publish","data":{"channel":"chatroom","data":2}}` {
		t.Fatalf("chatroom got %v", got)
	}
	if n := len(both.got()); n != 3 {
		t.Fatalf("both got %d, want 3", n)
	}
	// Local publications are forwarded to the mesh (even with no local subscriber);
	// remote ones never are.
	if fw.n.Load() != 3 {
		t.Fatalf("forwarded %d, want 3", fw.n.Load())
	}
}

func TestBrokerSharesOneFrameAcrossSubscribers(t *testing.T) {
	b := NewBroker(2, nil, nil, nil)
	var subs []*frameKeeper
	for i := 0; i < 10; i++ {
		k := &frameKeeper{}
		subs = append(subs, k)
		b.SubscribeSub(k, "x")
	}
	b.Publish("x", json.RawMessage(`"payload"`))
	for _, k := range subs[1:] {
		if &k.f[0] != &subs[0].f[0] {
			t.Fatal("subscribers got different frame buffers: the broadcast was encoded more than once")
		}
	}
}

type frameKeeper struct{ f []byte }

func (k *frameKeeper) Deliver(f []byte) bool { k.f = f; return true }

func TestBrokerConcurrentChurn(t *testing.T) {
	il := &interestLog{}
	b := NewBroker(4, il, nil, nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			s := &recSub{}
			for i := 0; i < 500; i++ {
				ch := fmt.Sprintf("c%d", i%7)
				b.SubscribeSub(s, ch)
				b.Publish(ch, json.RawMessage(`0`))
				b.UnsubscribeSub(s, ch)
			}
		}(g)
	}
	wg.Wait()
	if n := len(b.Channels()); n != 0 {
		t.Fatalf("%d channels left after everyone unsubscribed", n)
	}
	// Every channel's transitions alternate + and -, ending with -.
	last := map[string]byte{}
	for _, e := range il.log {
		ch := e[1:]
		if last[ch] == e[0] {
			t.Fatalf("two %c in a row for %s", e[0], ch)
		}
		last[ch] = e[0]
	}
	for ch, l := range last {
		if l != '-' {
			t.Fatalf("%s still wanted", ch)
		}
	}
}

type countSub struct{ n atomic.Int64 }

func (c *countSub) Deliver([]byte) bool { c.n.Add(1); return true }

// TestSubscriberSetMatchesModel: random joins, repeated joins, leaves of members and of
// strangers on one channel, with a publication after every step: exactly the members get
// each publication, once, whatever the set's size (across the switch to an index at 16).
func TestSubscriberSetMatchesModel(t *testing.T) {
	b := NewBroker(1, nil, nil, nil)
	subs := make([]*countSub, 200)
	for i := range subs {
		subs[i] = &countSub{}
	}
	member := map[int]bool{}
	want := make([]int64, len(subs))
	rng := uint64(42)
	next := func(n int) int { rng = rng*6364136223846793005 + 1442695040888963407; return int(rng>>33) % n }
	for step := range 5000 {
		i := next(len(subs))
		if next(3) == 0 {
			b.UnsubscribeSub(subs[i], "ch")
			delete(member, i)
		} else {
			b.SubscribeSub(subs[i], "ch")
			member[i] = true
		}
		b.Publish("ch", json.RawMessage(`1`))
		for j := range member {
			want[j]++
		}
		if got := b.Subscribers("ch"); got != len(member) {
			t.Fatalf("step %d: %d subscribers, want %d", step, got, len(member))
		}
	}
	for i, s := range subs {
		if s.n.Load() != want[i] {
			t.Fatalf("subscriber %d got %d publications, want %d", i, s.n.Load(), want[i])
		}
	}
}
