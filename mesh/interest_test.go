package mesh

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The interest table is driven by scripts of events; each step states the full expected output,
// so a failure replays exactly.

var t0 = time.Unix(1_000_000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// fmtDeltas writes deltas as "+a,-b@3": the channels added and removed, and the version.
func fmtDeltas(ds []Delta) string {
	var b []string
	for _, d := range ds {
		var ops []string
		for _, ch := range d.Added {
			ops = append(ops, "+"+ch)
		}
		for _, ch := range d.Removed {
			ops = append(ops, "-"+ch)
		}
		b = append(b, fmt.Sprintf("%s@%d", strings.Join(ops, ","), d.Version))
	}
	return strings.Join(b, " ")
}

func TestLocalInterest(t *testing.T) {
	type step struct {
		op   string // add, rm, expire (each followed by a flush); addq (no flush); flush
		ch   string
		ms   int
		want string // deltas produced
		beat Beat   // optional check (Count -1 = skip)
		max  int    // flush: bytes per delta
		msgs int    // flush: deltas at most (0: all)
	}
	h := func(chs ...string) uint64 { return Digest(chs) }
	tests := []struct {
		name  string
		steps []step
		final []string
	}{
		{
			name: "add announces once, refcounted",
			steps: []step{
				{op: "add", ch: "a", want: "+a@1", beat: Beat{1, h("a"), 1}},
				{op: "add", ch: "a", want: "", beat: Beat{1, h("a"), 1}},
				{op: "add", ch: "b", want: "+b@2", beat: Beat{2, h("a", "b"), 2}},
			},
			final: []string{"a", "b"},
		},
		{
			name: "removal waits for the delay",
			steps: []step{
				{op: "add", ch: "a", want: "+a@1"},
				{op: "rm", ch: "a", ms: 0},
				{op: "expire", ms: 499, want: "", beat: Beat{1, h("a"), 1}},
				{op: "expire", ms: 500, want: "-a@2", beat: Beat{2, 0, 0}},
				{op: "expire", ms: 1000, want: ""},
			},
			final: []string{},
		},
		{
			name: "re-add within the delay cancels the removal",
			steps: []step{
				{op: "add", ch: "a", want: "+a@1"},
				{op: "rm", ch: "a", ms: 0},
				{op: "add", ch: "a", ms: 100, want: ""},
				{op: "expire", ms: 10000, want: "", beat: Beat{1, h("a"), 1}},
			},
			final: []string{"a"},
		},
		{
			name: "refcount: one of two removes keeps the channel",
			steps: []step{
				{op: "add", ch: "x", want: "+x@1"},
				{op: "add", ch: "x", want: ""},
				{op: "rm", ch: "x"},
				{op: "expire", ms: 10000, want: ""},
				{op: "rm", ch: "x", ms: 10000},
				{op: "expire", ms: 10500, want: "-x@2"},
			},
			final: []string{},
		},
		{
			name: "unknown and extra removes are ignored",
			steps: []step{
				{op: "rm", ch: "nope"},
				{op: "add", ch: "a", want: "+a@1"},
				{op: "rm", ch: "a"},
				{op: "rm", ch: "a"},
				{op: "expire", ms: 500, want: "-a@2"},
			},
			final: []string{},
		},
		{
			name: "expiries come out in the order they became due, with consecutive versions",
			steps: []step{
				{op: "add", ch: "c", want: "+c@1"},
				{op: "add", ch: "a", want: "+a@2"},
				{op: "add", ch: "b", want: "+b@3"},
				{op: "rm", ch: "c"}, {op: "rm", ch: "a"}, {op: "rm", ch: "b", ms: 100},
				{op: "expire", ms: 500, want: "-c,-a@4"},
				{op: "expire", ms: 600, want: "-b@5", beat: Beat{5, 0, 0}},
			},
			final: []string{},
		},
		{
			name: "changes between flushes go out as one delta; heartbeats say only what was announced",
			steps: []step{
				{op: "add", ch: "a", want: "+a@1"},
				{op: "addq", ch: "b", beat: Beat{1, h("a"), 1}},
				{op: "addq", ch: "c"},
				{op: "rm", ch: "a"},
				{op: "expireq", ms: 500, beat: Beat{1, h("a"), 1}},
				{op: "flush", max: 1 << 20, want: "+b,+c,-a@2", beat: Beat{2, h("b", "c"), 2}},
				{op: "flush", max: 1 << 20, want: ""},
			},
			final: []string{"b", "c"},
		},
		{
			name: "added and removed before a flush: never announced",
			steps: []step{
				{op: "addq", ch: "x"},
				{op: "rm", ch: "x"},
				{op: "expireq", ms: 500},
				{op: "flush", max: 1 << 20, want: "", beat: Beat{0, 0, 0}},
			},
			final: []string{},
		},
		{
			name: "removed and re-added before a flush: nothing to say",
			steps: []step{
				{op: "add", ch: "x", want: "+x@1"},
				{op: "rm", ch: "x"},
				{op: "expireq", ms: 500},
				{op: "addq", ch: "x", ms: 600},
				{op: "flush", max: 1 << 20, want: "", beat: Beat{1, h("x"), 1}},
			},
			final: []string{"x"},
		},
		{
			name: "a flush is cut at the byte bound, one delta per flush when asked",
			steps: []step{
				{op: "addq", ch: "aa"}, {op: "addq", ch: "bb"}, {op: "addq", ch: "cc"}, {op: "addq", ch: "dd"},
				{op: "flush", max: 12, msgs: 1, want: "+aa,+bb@1"},
				{op: "flush", max: 12, want: "+cc,+dd@2", beat: Beat{2, h("aa", "bb", "cc", "dd"), 4}},
				{op: "addq", ch: "a-name-longer-than-the-bound"},
				{op: "flush", max: 12, want: "+a-name-longer-than-the-bound@3"},
			},
			final: []string{"a-name-longer-than-the-bound", "aa", "bb", "cc", "dd"},
		},
		{
			name: "additions go before removals that were due first",
			steps: []step{
				{op: "add", ch: "old1", want: "+old1@1"},
				{op: "add", ch: "old2", want: "+old2@2"},
				{op: "rm", ch: "old1"}, {op: "rm", ch: "old2"},
				{op: "expireq", ms: 500},
				{op: "addq", ch: "new", ms: 600},
				{op: "flush", max: 9, msgs: 1, want: "+new@3"},
				{op: "flush", max: 9, want: "-old1@4 -old2@5", beat: Beat{5, h("new"), 1}},
			},
			final: []string{"new"},
		},
		{
			name: "a channel re-added and removed while queued is announced once, as what it is now",
			steps: []step{
				{op: "add", ch: "x", want: "+x@1"},
				{op: "rm", ch: "x"},
				{op: "expireq", ms: 500},       // removal of x queued
				{op: "addq", ch: "x", ms: 510}, // cancelled: x stays announced
				{op: "rm", ch: "x", ms: 520},
				{op: "expireq", ms: 1020}, // queued again
				{op: "addq", ch: "y", ms: 1030},
				{op: "rm", ch: "y", ms: 1030},
				{op: "expireq", ms: 1530}, // y never announced: forgotten
				{op: "addq", ch: "y", ms: 1540},
				{op: "flush", max: 1 << 20, want: "+y,-x@2", beat: Beat{2, h("y"), 1}},
				{op: "flush", max: 1 << 20, want: ""},
			},
			final: []string{"y"},
		},
		{
			name: "a channel dropped before its turn is not announced, and is when wanted again",
			steps: []step{
				{op: "addq", ch: "a"}, {op: "addq", ch: "b"},
				{op: "rm", ch: "a"},
				{op: "flush", max: 1 << 20, want: "+b@1"},
				{op: "flush", max: 1 << 20, want: ""},
				{op: "addq", ch: "a", ms: 100},
				{op: "flush", max: 1 << 20, want: "+a@2"},
				{op: "addq", ch: "c", ms: 200}, {op: "rm", ch: "c", ms: 200},
				{op: "flush", max: 1 << 20, want: "", beat: Beat{2, h("a", "b"), 2}},
				{op: "expire", ms: 800, want: ""},
				{op: "addq", ch: "c", ms: 900},
				{op: "flush", max: 1 << 20, want: "+c@3"},
			},
			final: []string{"a", "b", "c"},
		},
		{
			name: "chat and chatroom are different channels",
			steps: []step{
				{op: "add", ch: "chat", want: "+chat@1"},
				{op: "add", ch: "chatroom", want: "+chatroom@2"},
				{op: "rm", ch: "chat"},
				{op: "expire", ms: 500, want: "-chat@3"},
			},
			final: []string{"chatroom"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := NewTable[string](500*time.Millisecond, time.Second)
			for i, s := range tc.steps {
				var got []Delta
				switch s.op {
				case "add":
					tb.AddLocal(s.ch)
					got = tb.Flush(1<<20, 0)
				case "addq":
					tb.AddLocal(s.ch)
				case "rm":
					tb.RemoveLocal(s.ch, at(s.ms))
				case "expire":
					tb.Expire(at(s.ms))
					got = tb.Flush(1<<20, 0)
				case "expireq":
					tb.Expire(at(s.ms))
				case "flush":
					got = tb.Flush(s.max, s.msgs)
				}
				if g := fmtDeltas(got); g != s.want {
					t.Fatalf("step %d (%s %s @%d): deltas %q, want %q", i, s.op, s.ch, s.ms, g, s.want)
				}
				if s.beat != (Beat{}) {
					if b := tb.LocalBeat(); b != s.beat {
						t.Fatalf("step %d: beat %+v, want %+v", i, b, s.beat)
					}
				}
			}
			snap := tb.LocalSnapshot()
			if !slices.Equal(snap.Channels, tc.final) {
				t.Fatalf("final set %v, want %v", snap.Channels, tc.final)
			}
			if snap.Digest != Digest(tc.final) {
				t.Fatalf("digest %x, want %x", snap.Digest, Digest(tc.final))
			}
		})
	}
}

// peerStep drives the peer side of the table. want is the expected "request a snapshot" result;
// route is the expected routing afterwards, as "channel=peers;..." for the listed channels.
type peerStep struct {
	op    string // addpeer, rmpeer, linkup, delta, snap, beat, listening
	peer  string
	ms    int
	d     Delta
	snap  Snapshot
	beat  Beat
	want  bool
	route map[string]string
}

func snapOf(v uint64, chs ...string) Snapshot {
	return Snapshot{Version: v, Digest: Digest(chs), Channels: chs}
}

func beatOf(v uint64, chs ...string) Beat {
	return Beat{Version: v, Digest: Digest(chs), Count: len(chs)}
}

func TestPeerInterest(t *testing.T) {
	tests := []struct {
		name  string
		steps []peerStep
	}{
		{
			name: "new link requests a snapshot; snapshot routes; deltas apply in order",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "linkup", peer: "p", want: true},
				{op: "snap", peer: "p", snap: snapOf(3, "a", "b"), route: map[string]string{"a": "p", "b": "p", "c": ""}},
				{op: "delta", peer: "p", d: Delta{4, []string{"c"}, nil}, route: map[string]string{"c": "p"}},
				{op: "delta", peer: "p", d: Delta{5, nil, []string{"a"}}, route: map[string]string{"a": "", "b": "p", "c": "p"}},
				{op: "beat", peer: "p", beat: beatOf(5, "b", "c"), want: false},
			},
		},
		{
			name: "missed delta → request, deltas ignored until the snapshot",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "linkup", peer: "p", want: true},
				{op: "snap", peer: "p", snap: snapOf(1, "a")},
				{op: "delta", peer: "p", ms: 10, d: Delta{3, []string{"c"}, nil}, want: true, route: map[string]string{"c": ""}},
				{op: "delta", peer: "p", ms: 20, d: Delta{4, []string{"d"}, nil}, want: false, route: map[string]string{"d": ""}},
				{op: "snap", peer: "p", snap: snapOf(4, "a", "b", "c", "d"), route: map[string]string{"a": "p", "b": "p", "c": "p", "d": "p"}},
			},
		},
		{
			name: "duplicate delta is ignored",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "snap", peer: "p", snap: snapOf(1, "a")},
				{op: "delta", peer: "p", d: Delta{1, nil, []string{"a"}}, want: false, route: map[string]string{"a": "p"}},
			},
		},
		{
			name: "heartbeat ahead of us → request; retried only after RequestRetry",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "snap", peer: "p", snap: snapOf(1, "a")},
				{op: "beat", peer: "p", ms: 0, beat: beatOf(2, "a", "b"), want: true},
				{op: "beat", peer: "p", ms: 500, beat: beatOf(2, "a", "b"), want: false},
				{op: "beat", peer: "p", ms: 1000, beat: beatOf(2, "a", "b"), want: true},
				{op: "snap", peer: "p", snap: snapOf(2, "a", "b")},
				{op: "beat", peer: "p", ms: 1100, beat: beatOf(2, "a", "b"), want: false},
			},
		},
		{
			name: "same version, different digest → request",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "snap", peer: "p", snap: snapOf(2, "a")},
				{op: "beat", peer: "p", beat: beatOf(2, "b"), want: true},
			},
		},
		{
			name: "stale snapshot ignored once synced",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "snap", peer: "p", snap: snapOf(5, "a")},
				{op: "snap", peer: "p", snap: snapOf(4, "z"), route: map[string]string{"a": "p", "z": ""}},
			},
		},
		{
			name: "two peers share a channel; removing one peer frees only its routes",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "addpeer", peer: "q"},
				{op: "snap", peer: "p", snap: snapOf(1, "x", "y")},
				{op: "snap", peer: "q", snap: snapOf(1, "x")},
				{op: "delta", peer: "q", d: Delta{2, []string{"chatroom"}, nil}, route: map[string]string{"x": "p,q", "y": "p", "chat": "", "chatroom": "q"}},
				{op: "rmpeer", peer: "p", route: map[string]string{"x": "q", "y": ""}},
				{op: "rmpeer", peer: "q", route: map[string]string{"x": "", "chatroom": ""}},
			},
		},
		{
			name: "reconnect keeps routing on the old set until the snapshot replaces it",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "snap", peer: "p", snap: snapOf(1, "a")},
				{op: "linkup", peer: "p", ms: 100, want: true, route: map[string]string{"a": "p"}},
				{op: "snap", peer: "p", snap: snapOf(3, "b"), route: map[string]string{"a": "", "b": "p"}},
			},
		},
		{
			name: "peer shows it listens → lost request repeated at once, not when synced",
			steps: []peerStep{
				{op: "addpeer", peer: "p"},
				{op: "linkup", peer: "p", ms: 0, want: true},
				{op: "beat", peer: "p", ms: 100, beat: beatOf(1, "a"), want: false},
				{op: "listening", peer: "p", ms: 150, want: true},
				{op: "snap", peer: "p", snap: snapOf(1, "a")},
				{op: "listening", peer: "p", ms: 200, want: false},
			},
		},
		{
			name: "events for unknown peers are ignored",
			steps: []peerStep{
				{op: "delta", peer: "ghost", d: Delta{1, []string{"a"}, nil}, want: false, route: map[string]string{"a": ""}},
				{op: "beat", peer: "ghost", beat: beatOf(1, "a"), want: false},
				{op: "linkup", peer: "ghost", want: false},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := NewTable[string](500*time.Millisecond, time.Second)
			for i, s := range tc.steps {
				var got bool
				now := at(s.ms)
				switch s.op {
				case "addpeer":
					tb.AddPeer(s.peer)
				case "rmpeer":
					tb.RemovePeer(s.peer)
				case "linkup":
					got = tb.LinkUp(s.peer, now)
				case "delta":
					got = tb.PeerDelta(s.peer, s.d, now)
				case "snap":
					tb.PeerSnapshot(s.peer, s.snap)
				case "beat":
					got = tb.PeerBeat(s.peer, s.beat, now)
				case "listening":
					got = tb.PeerListening(s.peer, now)
				}
				if got != s.want {
					t.Fatalf("step %d (%s %s): request=%v, want %v", i, s.op, s.peer, got, s.want)
				}
				for ch, want := range s.route {
					ps := slices.Clone(tb.Route(ch))
					slices.Sort(ps)
					if g := strings.Join(ps, ","); g != want {
						t.Fatalf("step %d (%s %s): route[%q]=%q, want %q", i, s.op, s.peer, ch, g, want)
					}
				}
			}
		})
	}
}

func TestRouteSliceStableAfterChange(t *testing.T) {
	tb := NewTable[string](0, time.Second)
	tb.AddPeer("p")
	tb.AddPeer("q")
	tb.PeerSnapshot("p", snapOf(1, "x"))
	tb.PeerSnapshot("q", snapOf(1, "x"))
	held := tb.Route("x")
	tb.RemovePeer("p")
	if len(held) != 2 || held[0] != "p" || held[1] != "q" {
		t.Fatalf("held route slice changed under the caller: %v", held)
	}
	if r := tb.Route("x"); len(r) != 1 || r[0] != "q" {
		t.Fatalf("route after remove = %v", r)
	}
}

func TestDigestOrderIndependent(t *testing.T) {
	if Digest([]string{"a", "b", "c"}) != Digest([]string{"c", "a", "b"}) {
		t.Fatal("digest depends on order")
	}
	if Digest([]string{"chat"}) == Digest([]string{"chatroom"}) || Digest([]string{"a"}) == 0 {
		t.Fatal("digest collision on trivial input")
	}
}

// TestExpireOnlyDueRemovals: removals are announced when due, in any interleaving of re-adds
// and repeated removals, looking only at the waiting ones.
func TestExpireOnlyDueRemovals(t *testing.T) {
	tb := NewTable[int](2*time.Second, time.Second)
	for _, ch := range []string{"a", "b", "c"} {
		tb.AddLocal(ch)
	}
	tb.Flush(0, 0)
	t0 := time.Unix(1000, 0)
	tb.RemoveLocal("a", t0)                           // due at t0+2s
	tb.RemoveLocal("b", t0.Add(500*time.Millisecond)) // due at t0+2.5s, but…
	tb.AddLocal("b")                                  // …wanted again
	tb.RemoveLocal("b", t0.Add(time.Second))          // and removed again: due at t0+3s
	if tb.Expire(t0.Add(1999 * time.Millisecond)) {
		t.Fatal("something due before any removal delay passed")
	}
	if !tb.Expire(t0.Add(2 * time.Second)) {
		t.Fatal("a not due at its time")
	}
	d := tb.Flush(0, 0)
	if len(d) != 1 || !slices.Equal(d[0].Removed, []string{"a"}) {
		t.Fatalf("flushed %+v, want a removed", d)
	}
	if tb.Expire(t0.Add(2600 * time.Millisecond)) {
		t.Fatal("b's first, cancelled removal was announced")
	}
	if !tb.Expire(t0.Add(3 * time.Second)) {
		t.Fatal("b's second removal not due at its time")
	}
	if d := tb.Flush(0, 0); len(d) != 1 || !slices.Equal(d[0].Removed, []string{"b"}) {
		t.Fatalf("flushed %+v, want b removed", d)
	}
	if len(tb.removals) != 0 {
		t.Fatalf("%d removals still queued", len(tb.removals))
	}
}
