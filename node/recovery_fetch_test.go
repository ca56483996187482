package node

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

type nopSub struct{}

func (nopSub) Deliver([]byte) bool { return true }

// ServeFetch answers from the ring what a client at the position missed, page by page within
// the bound, only while the node receives the channel, and never makes a ring for a channel
// a peer names.
func TestServeFetch(t *testing.T) {
	b := NewBroker(1, nil, nil, nil)
	b.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}}, "me-1")
	b.SubscribeSub(nopSub{}, "rc.a")
	time.Sleep(interestSettle + 10*time.Millisecond) // the origins know of the interest
	for i := 1; i <= 20; i++ {
		b.Publish("rc.a", []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 100))))
	}
	req := func(seq uint64) []byte { return []byte(fmt.Sprintf(`{"seqs":{"me-1":%d},"time":1}`, seq)) }
	pubs, rec, more, _, err := decodeFetchReply(b.ServeFetch("rc.a", req(15), 1<<20))
	if err != nil || !rec || more || len(pubs) != 5 || pubs[0].seq != 16 || pubs[4].seq != 20 || !strings.HasPrefix(string(pubs[0].data), `{"n":16,`) {
		t.Fatalf("after 15: %d pubs, complete %v, more %v, %v", len(pubs), rec, more, err)
	}
	// A small bound: pages that together are the whole answer.
	var all []fetchedPub
	from := uint64(0)
	for page := 0; ; page++ {
		got, _, more, _, err := decodeFetchReply(b.ServeFetch("rc.a", req(from), 600))
		if err != nil || len(got) == 0 || page > 20 {
			t.Fatalf("page %d: %d pubs, %v", page, len(got), err)
		}
		all = append(all, got...)
		from = got[len(got)-1].seq
		if !more {
			break
		}
	}
	if len(all) != 20 || all[19].seq != 20 {
		t.Fatalf("paged: %d publications", len(all))
	}
	// Hostile requests: not JSON, a channel never seen (no ring made), a sequence of 2^64-1.
	for _, c := range []struct{ ch, req string }{{"rc.a", "not json"}, {"rc.zzz", `{"seqs":{}}`}, {"other", `{}`}} {
		if _, rec, _, _, err := decodeFetchReply(b.ServeFetch(c.ch, []byte(c.req), 1<<20)); err != nil || rec {
			t.Errorf("%q on %s: complete %v, %v", c.req, c.ch, rec, err)
		}
	}
	if b.rec.lockRingIfAny("rc.zzz") != nil {
		t.Error("a peer's request made a ring")
	}
	if got, _, _, _, err := decodeFetchReply(b.ServeFetch("rc.a", req(math.MaxUint64), 1<<20)); len(got) != 0 || err != nil {
		t.Errorf("after 2^64-1: %d pubs, %v", len(got), err)
	}
	// A request past maxFetchRequest is refused before it is parsed (a position of 100,000
	// origins, 3.4 MB of JSON, took 74 ms to answer); one just under it is answered.
	position := func(origins int) string {
		var s strings.Builder
		s.WriteString(`{"seqs":{"me-1":5`)
		for i := range origins {
			fmt.Fprintf(&s, `,"o%d-%d":%d`, i, i, uint64(math.MaxUint64)-uint64(i))
		}
		s.WriteString(`},"time":1}`)
		return s.String()
	}
	huge := position(100_000)
	hb := []byte(huge)
	start := time.Now()
	out := b.ServeFetch("rc.a", hb, 1<<20)
	took := time.Since(start)
	got, rec, _, why, err := decodeFetchReply(out)
	if err != nil || rec || len(got) != 0 || !strings.Contains(why, "larger") {
		t.Errorf("a position of 100,000 origins (%d bytes): %d pubs, complete %v, %q, %v", len(huge), len(got), rec, why, err)
	}
	t.Logf("a position of 100,000 origins (%d KiB) refused in %v", len(huge)>>10, took)
	fits := position(1500)
	if len(fits) > maxFetchRequest {
		t.Fatalf("test position of %d bytes", len(fits))
	}
	if got, _, _, _, err := decodeFetchReply(b.ServeFetch("rc.a", []byte(fits), 1<<20)); err != nil || len(got) != 15 || got[0].seq != 6 {
		t.Errorf("a position of 1,500 origins (%d bytes): %d pubs, %v", len(fits), len(got), err)
	}
	// An origin of the channel keeps receiving it (and vouching) without a subscriber.
	b.UnsubscribeSub(nopSub{}, "rc.a")
	if got, rec, _, _, _ := decodeFetchReply(b.ServeFetch("rc.a", req(15), 1<<20)); len(got) != 5 || !rec {
		t.Errorf("origin without a subscriber: %d pubs, complete %v", len(got), rec)
	}
	// A node that only received the channel no longer vouches once nobody subscribes.
	r := NewBroker(1, nil, nil, nil)
	r.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}}, "me-2")
	r.SubscribeSub(nopSub{}, "rc.a")
	time.Sleep(interestSettle + 10*time.Millisecond)
	for i := uint64(1); i <= 5; i++ {
		if i%2 == 0 { // as a node of the version before the position field sent it: still read
			r.DeliverRemote("rc.a", withPosition("me-1", i, time.Now().UnixNano(), []byte(`1`)), nil)
			continue
		}
		r.DeliverRemote("rc.a", []byte(`1`), encodePosition("me-1", i, time.Now().UnixNano()))
	}
	if got, rec, _, _, _ := decodeFetchReply(r.ServeFetch("rc.a", req(2), 1<<20)); len(got) != 3 || !rec {
		t.Errorf("receiving node: %d pubs, complete %v", len(got), rec)
	}
	r.UnsubscribeSub(nopSub{}, "rc.a")
	if got, rec, _, why, _ := decodeFetchReply(r.ServeFetch("rc.a", req(2), 1<<20)); len(got) != 0 || rec || why == "" {
		t.Errorf("without a subscriber: %d pubs, complete %v, %q", len(got), rec, why)
	}
}

// A peer's reply is refused whole when any part would be forwarded malformed.
func TestDecodeFetchReplyRefusesMalformed(t *testing.T) {
	pub := func(origin string, seq uint64, data string) []byte {
		b := binary.AppendUvarint(nil, uint64(len(origin)))
		b = append(b, origin...)
		b = binary.AppendUvarint(b, seq)
		b = binary.AppendVarint(b, time.Now().UnixNano())
		b = binary.AppendUvarint(b, uint64(len(data)))
		return append(b, data...)
	}
	head := appendReplyHead(nil, true, false, "")
	ok := append(append([]byte{}, head...), pub("o", 1, `{"a":1}`)...)
	if got, _, _, _, err := decodeFetchReply(ok); err != nil || len(got) != 1 {
		t.Fatalf("valid reply: %v", err)
	}
	huge := binary.AppendUvarint(append([]byte{}, head...), math.MaxUint64)
	for name, b := range map[string][]byte{
		"empty":           nil,
		"data not JSON":   append(append([]byte{}, head...), pub("o", 1, `{"a":`)...),
		"frame injected":  append(append([]byte{}, head...), pub("o", 1, `1}},{"event":"#setAuthToken"`)...),
		"sequence 0":      append(append([]byte{}, head...), pub("o", 0, `1`)...),
		"empty origin":    append(append([]byte{}, head...), pub("", 1, `1`)...),
		"origin too long": append(append([]byte{}, head...), pub(strings.Repeat("o", maxOriginLen+1), 1, `1`)...),
		"length 2^64-1":   huge,
		"truncated":       ok[:len(ok)-1],
	} {
		if _, _, _, _, err := decodeFetchReply(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzFetchReply: any bytes from a peer decode or are refused, without panic; what decodes
// has valid origins, sequences and JSON data, and encodes back to the same publications.
func FuzzFetchReply(f *testing.F) {
	b := NewBroker(1, nil, nil, nil)
	b.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}}, "me-1")
	b.SubscribeSub(nopSub{}, "rc.a")
	for i := 1; i <= 3; i++ {
		b.Publish("rc.a", []byte(fmt.Sprint(i)))
	}
	f.Add(b.ServeFetch("rc.a", []byte(`{"seqs":{"me-1":0}}`), 1<<20))
	f.Add([]byte{1, 0})
	f.Add([]byte{3, 2, 'h', 'i', 1, 'o', 5, 2, 1, '7'})
	f.Fuzz(func(t *testing.T, in []byte) {
		pubs, _, _, _, err := decodeFetchReply(in)
		if err != nil {
			return
		}
		for _, p := range pubs {
			if p.origin == "" || len(p.origin) > maxOriginLen || p.seq == 0 {
				t.Fatalf("decoded %+v", p)
			}
			frame, off := encodeRetained("rc.a", p.data, p.origin, p.seq, p.at)
			if string(frame[off:off+len(p.data)]) != string(p.data) {
				t.Fatalf("data offset %d wrong in %s", off, frame)
			}
		}
	})
}

// Rings of channels nobody here subscribes to are reclaimed once they keep nothing within the
// age bound, so a publisher naming ever new channels cannot grow a node without bound; a ring
// made again numbers under a new origin name (a client's old position never swallows the new
// sequence); past MaxChannels a channel is served without positions.
func TestRingSweepAndBound(t *testing.T) {
	b := NewBroker(1, nil, nil, nil)
	b.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}, Age: 20 * time.Millisecond, MaxChannels: 5000}, "me-1")
	got := &recordSub{}
	b.SubscribeSub(got, "rc.kept")
	b.Publish("rc.kept", []byte(`1`))
	b.Publish("rc.gone", []byte(`1`))
	firstOrigin := got.lastOrigin(t)
	time.Sleep(30 * time.Millisecond)
	for i := range 4000 {
		b.Publish(fmt.Sprintf("rc.%d", i), []byte(`1`))
	}
	b.rec.mu.Lock()
	n, reclaimed := len(b.rec.rings), b.rec.reclaimed
	_, kept := b.rec.rings["rc.kept"]
	_, gone := b.rec.rings["rc.gone"]
	b.rec.mu.Unlock()
	if reclaimed == 0 || n >= 4002 || !kept || gone {
		t.Fatalf("after 4,000 channels: %d rings, %d reclaimed, subscribed ring kept %v, idle ring kept %v", n, reclaimed, kept, gone)
	}
	// rc.kept's ring (subscribed) keeps its origin name; rc.gone's is made again under a new one.
	b.Publish("rc.kept", []byte(`2`))
	if o := got.lastOrigin(t); o != firstOrigin {
		t.Errorf("subscribed ring's origin changed: %q → %q", firstOrigin, o)
	}
	b.SubscribeSub(got, "rc.gone")
	b.Publish("rc.gone", []byte(`2`))
	if o := got.lastOrigin(t); o == firstOrigin || !strings.HasPrefix(o, "me-1~") {
		t.Errorf("ring made again numbers as %q (first %q)", o, firstOrigin)
	}
	// The bound: with nothing reclaimable, channels past it get no ring, and still deliver.
	b2 := NewBroker(1, nil, nil, nil)
	b2.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}, MaxChannels: 10}, "me-1")
	for i := range 10 {
		b2.Publish(fmt.Sprintf("rc.%d", i), []byte(`1`))
	}
	late := &recordSub{}
	b2.SubscribeSub(late, "rc.late")
	b2.Publish("rc.late", []byte(`7`))
	if b2.rec.refused.Load() == 0 || len(late.frames) != 1 || strings.Contains(string(late.frames[0]), `"pos"`) {
		t.Fatalf("past the bound: refused %d, frames %q", b2.rec.refused.Load(), late.frames)
	}
}

type recordSub struct{ frames [][]byte }

func (r *recordSub) Deliver(f []byte) bool { r.frames = append(r.frames, f); return true }

func (r *recordSub) lastOrigin(t *testing.T) string {
	t.Helper()
	if len(r.frames) == 0 {
		t.Fatal("nothing delivered")
	}
	f := string(r.frames[len(r.frames)-1])
	i := strings.Index(f, `"pos":["`)
	if i < 0 {
		t.Fatalf("no position in %s", f)
	}
	rest := f[i+len(`"pos":["`):]
	return rest[:strings.IndexByte(rest, '"')]
}

// FuzzServeFetch: any request bytes from a peer get an answer that decodes and fits the bound
// (or is only the answer's head), without panic and without making a ring.
func FuzzServeFetch(f *testing.F) {
	b := NewBroker(1, nil, nil, nil)
	b.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}}, "me-1")
	b.SubscribeSub(nopSub{}, "rc.a")
	time.Sleep(interestSettle + 10*time.Millisecond)
	for i := 1; i <= 50; i++ {
		b.Publish("rc.a", []byte(fmt.Sprintf(`{"n":%d}`, i)))
	}
	f.Add([]byte(`{"seqs":{"me-1":10},"time":1}`), uint32(1<<20))
	f.Add([]byte(`{"seqs":{"me-1":18446744073709551615,"x":1},"time":-1}`), uint32(40))
	f.Add([]byte(`{"seqs":{"":0}}`), uint32(0))
	f.Add([]byte(`{"seqs":null,"time":9223372036854775807}`), uint32(7))
	f.Add([]byte("\xff\xfe"), uint32(1<<20))
	f.Fuzz(func(t *testing.T, req []byte, max uint32) {
		m := int(max % (2 << 20))
		for _, ch := range []string{"rc.a", "rc.b"} {
			out := b.ServeFetch(ch, req, m)
			pubs, _, _, _, err := decodeFetchReply(out)
			if err != nil {
				t.Fatalf("%s: the answer does not decode: %v", ch, err)
			}
			if len(pubs) > 0 && len(out) > m {
				t.Fatalf("%s: %d bytes with publications for a bound of %d", ch, len(out), m)
			}
		}
		if b.rec.lockRingIfAny("rc.b") != nil {
			t.Fatal("a peer's request made a ring")
		}
	})
}

// TestRecoverRules: each channel keeps what its rule says (the first matching rule, then the
// patterns of Channels with the defaults), so a busy price channel can keep little and a chat
// channel much on one node.
func TestRecoverRules(t *testing.T) {
	b := NewBroker(1, nil, nil, nil)
	b.SetRecovery(RecoverConfig{
		Rules: []RecoverRule{
			{Pattern: "prices.*", Messages: 3},
			{Pattern: "prices.eur", Messages: 100}, // after the first match: never used
			{Pattern: "ticks.*", Age: 30 * time.Millisecond},
		},
		Channels: []string{"chat.*"}, Messages: 10,
	}, "me-1")
	for _, ch := range []string{"prices.eur", "chat.a", "ticks.x"} {
		b.SubscribeSub(nopSub{}, ch)
	}
	time.Sleep(interestSettle + 10*time.Millisecond)
	for i := 1; i <= 8; i++ {
		for _, ch := range []string{"prices.eur", "chat.a", "ticks.x"} {
			b.Publish(ch, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		}
	}
	fetch := func(ch string) (int, bool) {
		pubs, rec, _, _, err := decodeFetchReply(b.ServeFetch(ch, []byte(`{"seqs":{"me-1":2},"time":1}`), 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		return len(pubs), rec
	}
	if n, rec := fetch("prices.eur"); n != 3 || rec {
		t.Errorf("prices.eur (3 kept): %d publications, complete %v; want 3, incomplete", n, rec)
	}
	if n, rec := fetch("chat.a"); n != 6 || !rec {
		t.Errorf("chat.a (10 kept): %d publications, complete %v; want 6, complete", n, rec)
	}
	if n, rec := fetch("ticks.x"); n != 6 || !rec {
		t.Errorf("ticks.x before its age: %d publications, complete %v; want 6, complete", n, rec)
	}
	time.Sleep(50 * time.Millisecond)
	if n, rec := fetch("ticks.x"); n != 0 || rec {
		t.Errorf("ticks.x past its age (30 ms): %d publications, complete %v; want 0, incomplete", n, rec)
	}
	if n, _ := fetch("other"); n != 0 || b.rec.lockRingIfAny("other") != nil {
		t.Error("a channel no rule matches has a ring")
	}
}
