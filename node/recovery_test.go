package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/proto/meshpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// withPosition is how a node of the version before the position field sent a positioned
// publication (posPrefix), for the tests of reading it.
func withPosition(origin string, seq uint64, at int64, data []byte) []byte {
	b := make([]byte, 0, 3+len(origin)+40+len(data))
	b = append(b, posPrefix)
	b = append(b, origin...)
	b = append(b, 0)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, 0)
	b = strconv.AppendInt(b, at, 10)
	b = append(b, 0)
	return append(b, data...)
}

func TestPositionPrefixRoundTrip(t *testing.T) {
	b := withPosition("n1-abc", 42, 1234567, []byte(`{"x":1}`))
	o, seq, at, d, ok := splitPosition(b)
	if !ok || o != "n1-abc" || seq != 42 || at != 1234567 || string(d) != `{"x":1}` {
		t.Fatalf("%q %d %d %q %v", o, seq, at, d, ok)
	}
	for _, plain := range [][]byte{[]byte(`"x"`), nil, {0}, {0, 'a', 0, '0', 0, '1', 0}, {0, 0, '1', 0, '1', 0}, {0, 'a', 0, 'x', 0, '1', 0}} {
		if _, _, _, d, ok := splitPosition(plain); ok || !bytes.Equal(d, plain) {
			t.Errorf("%q taken for a positioned publication", plain)
		}
	}
}

func FuzzSplitPosition(f *testing.F) {
	f.Add(withPosition("o", 1, 2, []byte("d")))
	f.Add([]byte(`{"a":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, seq, at, d, ok := splitPosition(b)
		if !ok {
			return
		}
		if again := withPosition(o, seq, at, d); len(again) > len(b)+40 {
			t.Fatalf("round trip grew: %q -> %q", b, again)
		}
	})
}

// The position field is what protobuf makes of meshpb.Position, byte for byte, and reads back
// what protobuf writes, whatever a later version adds; anything else is no position.
func TestPositionEncodingMatchesProto(t *testing.T) {
	for _, c := range []struct {
		origin string
		seq    uint64
		at     int64
	}{{"n1-abc", 1, 1795630000123456789}, {"ü~3", math.MaxUint64, -1}, {strings.Repeat("o", maxOriginLen), 42, 0}} {
		enc := encodePosition(c.origin, c.seq, c.at)
		want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&meshpb.Position{Origin: c.origin, Seq: c.seq, UnixNano: c.at})
		if !bytes.Equal(enc, want) {
			t.Errorf("%+v: encoded %x, protobuf %x", c, enc, want)
		}
		if o, seq, at, ok := decodePosition(want); !ok || o != c.origin || seq != c.seq || at != c.at {
			t.Errorf("%+v: decoded %q %d %d %v", c, o, seq, at, ok)
		}
		// A later version's extra fields are skipped.
		later := protowire.AppendString(protowire.AppendTag(append([]byte(nil), want...), 9, protowire.BytesType), "zone-b")
		later = protowire.AppendVarint(protowire.AppendTag(later, 10, protowire.VarintType), 7)
		if o, seq, _, ok := decodePosition(later); !ok || o != c.origin || seq != c.seq {
			t.Errorf("%+v with later fields: %q %d %v", c, o, seq, ok)
		}
	}
	good := encodePosition("o", 5, 9)
	huge := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.BytesType), math.MaxUint64) // a length near 2^64
	// A member's frame-sized position (1 MiB in one field): refused when it is the origin,
	// skipped in one pass when it is a field this version does not know.
	mib := bytes.Repeat([]byte("o"), 1<<20)
	bigUnknown := protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), good...), 15, protowire.BytesType), mib)
	if o, seq, _, ok := decodePosition(bigUnknown); !ok || o != "o" || seq != 5 {
		t.Errorf("a position with a 1 MiB unknown field: %q %d %v", o, seq, ok)
	}
	for name, b := range map[string][]byte{
		"1 MiB origin":       protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), mib),
		"1 MiB, no origin":   protowire.AppendBytes(protowire.AppendTag(nil, 15, protowire.BytesType), mib),
		"empty":              nil,
		"no origin":          encodePosition("", 5, 9),
		"sequence 0":         encodePosition("o", 0, 9),
		"origin too long":    encodePosition(strings.Repeat("o", maxOriginLen+1), 5, 9),
		"origin not UTF-8":   encodePosition("o\xff", 5, 9),
		"truncated":          good[:len(good)-3],
		"length near 2^64":   append(huge, 'o'),
		"wrong wire type":    protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5),
		"bad tag":            {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"JSON":               []byte(`{"origin":"o"}`),
		"group (deprecated)": protowire.AppendTag(nil, 4, protowire.StartGroupType),
	} {
		if o, seq, at, ok := decodePosition(b); ok {
			t.Errorf("%s: taken for a position: %q %d %d", name, o, seq, at)
		}
	}
}

// FuzzDecodePosition: never panics, and a position it accepts is one protobuf reads the same.
func FuzzDecodePosition(f *testing.F) {
	f.Add(encodePosition("n1-abc", 42, 1795630000123456789))
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, seq, at, ok := decodePosition(b)
		if !ok {
			return
		}
		var p meshpb.Position
		if err := proto.Unmarshal(b, &p); err != nil {
			t.Fatalf("accepted %x, which protobuf refuses: %v", b, err)
		}
		if p.Origin != o || p.Seq != seq || p.UnixNano != at {
			t.Fatalf("%x: decoded %q %d %d, protobuf %q %d %d", b, o, seq, at, p.Origin, p.Seq, p.UnixNano)
		}
	})
}

// ring fills a ring with publications (origin, seq), one millisecond apart from t0.
func ringWith(t0 time.Time, limit int, pubs ...retained) *ring {
	// The node has been receiving the channel since well before t0 (past interestSettle).
	rg := &ring{since: t0.Add(-time.Second).UnixNano(), evicted: map[string]uint64{}, limit: limit, age: time.Hour}
	for i, p := range pubs {
		p.at = t0.Add(time.Duration(i+1) * time.Millisecond).UnixNano()
		p.frame = []byte(p.origin + ":" + string(rune('0'+p.seq)))
		rg.keep(p)
	}
	return rg
}

func frames(es []retained) string {
	var fs [][]byte
	for _, e := range es {
		fs = append(fs, e.frame)
	}
	return string(bytes.Join(fs, []byte(" ")))
}

// What a client at a position missed comes back once, in order, and the answer says whether
// it is all: a hole in an origin's sequence, the retention bound, or a node that began
// receiving the channel after the position each make it incomplete.
func TestRingReplay(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	ms := func(i int) int64 {
		return t0.Add(time.Duration(i)*time.Millisecond).UnixNano() / int64(time.Millisecond)
	}
	pubs := []retained{{origin: "a", seq: 1}, {origin: "b", seq: 1}, {origin: "a", seq: 2}, {origin: "a", seq: 3}, {origin: "b", seq: 2}}
	now := time.Now().UnixNano()
	for _, c := range []struct {
		name     string
		limit    int
		pubs     []retained
		since    time.Time
		pos      Position
		want     string
		complete bool
	}{
		{"both origins named", 10, pubs, t0, Position{Seqs: map[string]uint64{"a": 1, "b": 1}, Time: ms(2)}, "a:2 a:3 b:2", true},
		{"one origin unknown, after the time", 10, pubs, t0, Position{Seqs: map[string]uint64{"a": 2}, Time: ms(3)}, "a:3 b:2", true},
		{"nothing missed", 10, pubs, t0, Position{Seqs: map[string]uint64{"a": 3, "b": 2}, Time: ms(5)}, "", true},
		{"past the bound", 3, pubs, t0, Position{Seqs: map[string]uint64{"a": 0, "b": 0}, Time: ms(0)}, "a:2 a:3 b:2", false},
		{"a hole in an origin", 10, []retained{{origin: "a", seq: 1}, {origin: "a", seq: 3}}, t0, Position{Seqs: map[string]uint64{"a": 1}, Time: ms(1)}, "a:3", false},
		{"began receiving after the position", 10, pubs, t0.Add(time.Hour), Position{Seqs: map[string]uint64{"a": 1, "b": 1}, Time: ms(2)}, "a:2 a:3 b:2", false},
	} {
		rg := ringWith(t0, c.limit, c.pubs...)
		if c.since.After(t0) { // began receiving after every kept entry
			rg.began(c.since.UnixNano(), interestSettle)
		}
		got, ans, _ := rg.replay(nil, c.pos, now, 0, false)
		if frames(got) != c.want || ans.Recovered != c.complete || ans.Missed != len(got) || (!ans.Recovered && ans.Reason == "") {
			t.Errorf("%s: replayed %q complete %v (%q), want %q complete %v", c.name, frames(got), ans.Recovered, ans.Reason, c.want, c.complete)
		}
	}
	// The age bound drops old entries and counts them as past the bound.
	rg := ringWith(t0, 10, pubs...)
	rg.age = time.Second
	got, ans, _ := rg.replay(nil, Position{Seqs: map[string]uint64{"a": 1}, Time: ms(1)}, t0.Add(time.Hour).UnixNano(), 0, false)
	if len(got) != 0 || ans.Recovered {
		t.Errorf("after the age bound: %q complete %v", frames(got), ans.Recovered)
	}
}

// Positions come from clients: a sequence of 2^64-1, times far in the past or future, ten
// thousand invented origins. Nothing overflows, the client gets only what it could have
// missed, and the answer never claims more than the ring can vouch for.
func TestRingReplayHostilePositions(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	pubs := []retained{{origin: "a", seq: 1}, {origin: "a", seq: 2}}
	now := time.Now().UnixNano()
	many := map[string]uint64{"a": 1}
	for i := range 10_000 {
		many["x"+string(rune('a'+i%26))+time.Duration(i).String()] = uint64(i)
	}
	for _, c := range []struct {
		name     string
		pos      Position
		want     string
		complete bool
	}{
		{"sequence 2^64-1: has everything", Position{Seqs: map[string]uint64{"a": math.MaxUint64}, Time: t0.UnixMilli() + 2}, "", true},
		{"time 2^63-1", Position{Seqs: map[string]uint64{"a": 1}, Time: math.MaxInt64}, "a:2", true},
		{"negative time, no origins", Position{Time: math.MinInt64}, "a:1 a:2", false},
		{"10,000 invented origins", Position{Seqs: many, Time: t0.UnixMilli() + 1}, "a:2", true},
	} {
		rg := ringWith(t0, 10, pubs...)
		got, ans, _ := rg.replay(nil, c.pos, now, 0, false)
		if frames(got) != c.want || ans.Recovered != c.complete {
			t.Errorf("%s: replayed %q complete %v (%q), want %q complete %v", c.name, frames(got), ans.Recovered, ans.Reason, c.want, c.complete)
		}
	}
}

// Subscribe data that is not a recovery request is left to the ordinary subscribe.
func TestSubscribeRecoverIgnoresOtherData(t *testing.T) {
	b := NewBroker(1, nil, nil, nil)
	b.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}}, "me")
	for _, d := range []string{``, `null`, `"x"`, `[1,2]`, `{"recover":null}`, `{"recover":"pos"}`, `{"other":1}`, `{"recover":{"seqs":{"a":-1}}}`} {
		if b.SubscribeRecover(nil, "rc.x", json.RawMessage(d), func(any) { t.Error("acknowledged") }, func(any) { t.Error("answered") }) {
			t.Errorf("%q taken for a recovery request", d)
		}
	}
	if b.SubscribeRecover(nil, "other", json.RawMessage(`{"recover":{"seqs":{},"time":1}}`), func(any) { t.Error("acknowledged") }, func(any) { t.Error("answered") }) {
		t.Error("a channel that does not recover took a recovery request")
	}
}

// BenchmarkRetainedMemory measures what recovery keeps: heap bytes per retained publication
// (its frame with the position, and the ring's bookkeeping), by payload size, and per
// recovery channel (its ring with one publication). docs/operations.md quotes it.
func BenchmarkRetainedMemory(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("per-message/payload=%d", size), func(b *testing.B) {
			const n = 10_000
			data := []byte(`"` + strings.Repeat("x", size-2) + `"`)
			for range b.N {
				br := NewBroker(1, nil, nil, nil)
				br.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}, Messages: n}, "node-01234567")
				br.SubscribeSub(nopSub{}, "rc.chat.room-42")
				before := heap()
				for range n {
					br.Publish("rc.chat.room-42", data)
				}
				after := heap()
				b.ReportMetric(float64(after-before)/n, "B/retained")
				runtime.KeepAlive(br)
			}
		})
	}
	b.Run("per-channel", func(b *testing.B) {
		const n = 10_000
		for range b.N {
			br := NewBroker(1, nil, nil, nil)
			br.SetRecovery(RecoverConfig{Channels: []string{"rc.*"}}, "node-01234567")
			before := heap()
			for i := range n {
				br.Publish(fmt.Sprintf("rc.chat.room-%05d", i), []byte(`1`))
			}
			after := heap()
			b.ReportMetric(float64(after-before)/n, "B/channel")
			runtime.KeepAlive(br)
		}
	})
}

// TestRecoveryIsToldEveryTime is the promise as a property: over random histories (three
// origins, several publications in one millisecond, a node that began receiving part-way,
// bounds by count), and every position a client could hold, a replay answered complete is
// exactly what the client missed, once and in order; anything else is answered incomplete.
func TestRecoveryIsToldEveryTime(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	origins := []string{"a", "b", "c"}
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	complete, told := 0, 0
	var reuse []retained
	for trial := range 3000 {
		n := 1 + rnd.IntN(40)
		limit := 1 + rnd.IntN(n+5)
		began := rnd.IntN(n) // the node receives hist[began:]
		if rnd.IntN(3) > 0 {
			began = 0
		}
		var hist []retained
		seqs := map[string]uint64{}
		at := t0
		// In a third of the trials origin c's clock is 300 ms behind: only the allowance
		// for skew (500 ms) keeps its publications after a position from being skipped.
		skewed := trial%3 == 0
		for i := range n {
			o := origins[rnd.IntN(len(origins))]
			seqs[o]++
			at = at.Add(time.Duration(rnd.IntN(3)) * 300 * time.Microsecond) // often the same ms
			if i == began {
				// The node announced its interest 150 ms before the first publication it
				// received (the origins learn of it within interestSettle); nothing was
				// published in between.
				at = at.Add(200 * time.Millisecond)
			}
			stamp := at
			if skewed && o == "c" {
				stamp = at.Add(-300 * time.Millisecond) // c's clock is behind
			}
			hist = append(hist, retained{origin: o, seq: seqs[o], at: stamp.UnixNano(), frame: []byte(fmt.Sprintf("%s%d", o, seqs[o]))})
		}
		rg := &ring{evicted: map[string]uint64{}, limit: limit, age: time.Hour}
		rg.began(hist[began].at-int64(150*time.Millisecond), interestSettle)
		for _, e := range hist[began:] {
			rg.keep(e)
		}
		for k := 1; k <= n; k++ { // the client received hist[:k]
			pos := Position{Seqs: map[string]uint64{}, Time: hist[k-1].at / int64(time.Millisecond)}
			for _, e := range hist[:k] {
				pos.Seqs[e.origin] = e.seq
			}
			// With and without an allowance for clock skew where the clocks agree (an
			// allowance may only make more answers incomplete); with it where they do not.
			skews := []time.Duration{0, 500 * time.Millisecond}
			if skewed {
				skews = skews[1:]
			}
			for _, skew := range skews {
				// Into the list the previous answer used, as the broker reuses lists
				// (replayBufs): nothing of an earlier answer may leak into this one.
				got, ans, _ := rg.replay(reuse, pos, time.Now().UnixNano(), skew, false)
				reuse = got
				if frames(got) == frames(hist[k:]) && ans.Recovered {
					complete++
					continue
				}
				if ans.Recovered {
					t.Fatalf("trial %d (n %d, limit %d, began %d, skew %v), client has %d: answered complete with %q, missed %q",
						trial, n, limit, began, skew, k, frames(got), frames(hist[k:]))
				}
				told++
			}
		}
	}
	t.Logf("%d complete and exact, %d told incomplete", complete, told)
	if complete == 0 || told == 0 {
		t.Fatal("the histories never covered both outcomes")
	}
}

// TestRingReplayClockSkew: origin b's clock is 300 ms behind a's. The client's last
// publication is a's, so its position's time is a's clock; b publishes right after it, stamped
// 300 ms earlier. Judged by that time alone, b's publication was skipped and the answer said
// complete: a loss nobody was told of. With an allowance for the skew it is replayed, and
// what the node dropped of b within it makes the answer incomplete.
func TestRingReplayClockSkew(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	build := func(limit int) *ring {
		rg := &ring{since: t0.Add(-time.Minute).UnixNano(), evicted: map[string]uint64{}, limit: limit, age: time.Hour}
		for _, e := range []retained{
			{origin: "b", seq: 1, at: at(-2 * time.Second)},                         // long before: the client had subscribed since
			{origin: "a", seq: 1, at: at(0)},                                        // the client's last publication
			{origin: "b", seq: 2, at: at(-300*time.Millisecond + time.Millisecond)}, // just after it, on b's clock
			{origin: "a", seq: 2, at: at(2 * time.Millisecond)},
		} {
			e.frame = []byte(e.origin + ":" + string(rune('0'+e.seq)))
			rg.keep(e)
		}
		return rg
	}
	pos := Position{Seqs: map[string]uint64{"a": 1}, Time: t0.UnixMilli()}
	now := time.Now().UnixNano()
	for _, c := range []struct {
		name     string
		limit    int
		skew     time.Duration
		want     string
		complete bool
	}{
		{"no allowance: b's publication is skipped", 10, 0, "a:2", true},
		{"500 ms allowance: it is sent", 10, 500 * time.Millisecond, "b:2 a:2", true},
		{"100 ms allowance, less than the skew", 10, 100 * time.Millisecond, "a:2", true},
		{"b's publications dropped by the bound within the allowance: incomplete", 1, 500 * time.Millisecond, "a:2", false},
	} {
		got, ans, _ := build(c.limit).replay(nil, pos, now, c.skew, false)
		if frames(got) != c.want || ans.Recovered != c.complete {
			t.Errorf("%s: replayed %q complete %v (%q), want %q complete %v", c.name, frames(got), ans.Recovered, ans.Reason, c.want, c.complete)
		}
	}
}

// TestRingDropsAreJudgedByTheNewestTime: arrival order is not time order across origins, so
// the ring's record of what it dropped must be the newest time dropped, not the last dropped
// entry's. x publishes right after the client's position, then y, whose clock is 600 ms
// behind (past the allowance); both are dropped by the bound. Judged by y's time alone, x's
// loss went untold.
func TestRingDropsAreJudgedByTheNewestTime(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	rg := &ring{since: t0.Add(-time.Minute).UnixNano(), evicted: map[string]uint64{}, limit: 1, age: time.Hour}
	for _, e := range []retained{
		{origin: "a", seq: 1, at: at(0)},
		{origin: "x", seq: 1, at: at(time.Millisecond)},
		{origin: "y", seq: 1, at: at(-600 * time.Millisecond)},
		{origin: "a", seq: 2, at: at(2 * time.Millisecond)},
	} {
		e.frame = []byte(e.origin + ":" + string(rune('0'+e.seq)))
		rg.keep(e)
	}
	got, ans, _ := rg.replay(nil, Position{Seqs: map[string]uint64{"a": 1}, Time: t0.UnixMilli()}, time.Now().UnixNano(), 500*time.Millisecond, false)
	if frames(got) != "a:2" || ans.Recovered {
		t.Fatalf("replayed %q complete %v (%q); want a:2, incomplete (x:1 was dropped)", frames(got), ans.Recovered, ans.Reason)
	}
}
