package checker

import (
	"encoding/json"
	"testing"
	"time"
)

// The checker itself: a synthetic run with one of each defect is counted exactly.
func TestAnalyzeCountsEachDefect(t *testing.T) {
	var r Recorder
	t0 := time.Now().Add(-10 * time.Second)
	p := r.NewPub("p")
	p.Conns.Up("a", t0.Add(-5*time.Second))
	s := r.NewSub("s")
	s.Conns.Up("b", t0.Add(-5*time.Second))
	s.Holding("ch", t0)
	s.Expect("ch", t0)
	send := func(i int) Msg {
		m := Msg{P: "p", S: int64(i), C: "ch", O: "a", T: t0.Add(time.Duration(i+1) * 100 * time.Millisecond).UnixNano()}
		p.Record(m, nil)
		p.seq++
		return m
	}
	deliver := func(ch string, m Msg) {
		b, _ := json.Marshal(m)
		s.Deliver(ch, b)
	}
	var ms []Msg
	for i := 0; i < 10; i++ {
		ms = append(ms, send(i))
	}
	for _, i := range []int{0, 1, 1, 3, 2, 5, 6, 7, 8, 9} { // dup 1, 4 lost, 2 reordered
		deliver("ch", ms[i])
	}
	deliver("other", ms[9]) // leak (channel mismatch and not held)
	c, losses := r.Analyze(time.Now(), func(o, rcv string) int { return 0 })
	want := Counts{Sent: 10, Expected: 10, Delivered: 9, Lost: 1, LostUndetected: 1, LostOutside: 1, Duplicated: 1, Reordered: 1, Leaked: 1}
	if c != want {
		t.Fatalf("got %+v\nwant %+v\nlosses %+v", c, want, losses)
	}
	// The same loss is detected when the path's gap counter covers it, and allowed inside a fault.
	r.AddFault(&Fault{Start: t0, End: time.Now(), Crosses: SplitFault([]string{"a"}, []string{"b"})})
	c, _ = r.Analyze(time.Now(), func(o, rcv string) int {
		if o == "a" && rcv == "b" {
			return 1
		}
		return 0
	})
	if c.LostDetected != 1 || c.LostGap != 1 || c.LostUndetected != 0 || c.LostOutside != 0 {
		t.Fatalf("gap-covered loss: %+v", c)
	}
	// A subscriber disconnected around the loss was told.
	s.Conns.Down(time.Unix(0, ms[4].T).Add(-10 * time.Millisecond))
	s.Conns.Up("b", time.Unix(0, ms[4].T).Add(10*time.Millisecond))
	c, _ = r.Analyze(time.Now(), nil)
	if c.LostTold != 1 || c.LostUndetected != 0 {
		t.Fatalf("told loss: %+v", c)
	}
}

// B3: a publication sent just before the subscriber unsubscribes races the #unsubscribe (the
// publication crosses the mesh, the #unsubscribe one hop) and may rightly not be delivered; it is
// not expected. One sent more than UnsubscribeInFlight before the unsubscribe still is.
func TestUnsubscribeInFlightNotExpected(t *testing.T) {
	// The unsubscribe is now, so that a late delivery below (Deliver stamps time.Now) falls
	// within LeakGrace of it.
	release := time.Now()
	t0 := release.Add(-5 * time.Second)
	cases := []struct {
		name           string
		sentBefore     time.Duration // how long before the unsubscribe the publication was sent
		expected, lost int
	}{
		{"racing the unsubscribe (B3: 200µs)", 200 * time.Microsecond, 0, 0},
		{"just inside the bound", UnsubscribeInFlight - time.Millisecond, 0, 0},
		{"at the bound", UnsubscribeInFlight, 0, 0},
		{"just outside the bound", UnsubscribeInFlight + time.Millisecond, 1, 1},
		{"well before", 3 * time.Second, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Recorder
			p := r.NewPub("p")
			p.Conns.Up("a", t0.Add(-5*time.Second))
			s := r.NewSub("s")
			s.Conns.Up("b", t0.Add(-5*time.Second))
			s.Holding("ch", t0)
			s.Expect("ch", t0)
			m := Msg{P: "p", S: 0, C: "ch", O: "a", T: release.Add(-tc.sentBefore).UnixNano()}
			p.Record(m, nil)
			s.Released("ch", release) // and the publication never arrives
			end := time.Now().Add(time.Second)
			c, losses := r.Analyze(end, nil)
			if c.Expected != tc.expected || c.Lost != tc.lost || c.Leaked != 0 {
				t.Fatalf("got %+v, want expected %d lost %d; losses %+v", c, tc.expected, tc.lost, losses)
			}
			// Delivered anyway (the publication won the race): neither a leak nor a duplicate.
			b, _ := json.Marshal(m)
			s.Deliver("ch", b)
			if c, _ := r.Analyze(end, nil); c.Lost != 0 || c.Leaked != 0 || c.Duplicated != 0 {
				t.Fatalf("delivered: %+v", c)
			}
		})
	}
}

// TestSilentEndTells: a connection the client closed at its ping timeout (the server went
// silent) tells of what happened on it within SilentTell before; an ordinary close, or one
// much later, does not.
func TestSilentEndTells(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var l ConnLog
	l.Up("n3", t0)
	l.DownSilent(t0.Add(31 * time.Second))
	if !l.SilentEndWithin(t0.Add(time.Second), SilentTell) {
		t.Fatal("a publication 30 s before the ping-timeout close is not told")
	}
	if l.SilentEndWithin(t0.Add(-time.Second), SilentTell) {
		t.Fatal("a time before the connection is told by it")
	}
	var m ConnLog
	m.Up("n3", t0)
	m.Down(t0.Add(5 * time.Second))
	if m.SilentEndWithin(t0.Add(time.Second), SilentTell) {
		t.Fatal("an ordinary close counts as silent")
	}
	var o ConnLog
	o.Up("n3", t0)
	o.DownSilent(t0.Add(time.Minute))
	if o.SilentEndWithin(t0, SilentTell) {
		t.Fatal("a silent close a minute later tells of this")
	}
}

// Recovering subscribers: a disconnect excuses nothing, incomplete answers count, and only
// what no subscriber received from a failed origin is not expected.
func TestAnalyzeRecovering(t *testing.T) {
	var r Recorder
	t0 := time.Now().Add(-10 * time.Second)
	pa, pb := r.NewPub("pa"), r.NewPub("pb")
	send := func(p *Pub, origin string, i int) Msg {
		m := Msg{P: p.ID, S: int64(i), C: "ch", O: origin, T: t0.Add(time.Duration(i+1) * 100 * time.Millisecond).UnixNano()}
		p.Record(m, nil)
		return m
	}
	plain := r.NewSub("plain")
	plain.Conns.Up("a", t0)
	plain.Holding("ch", t0)
	plain.Expect("ch", t0)
	rs := r.NewSub("rec")
	rs.SetRecovering()
	rs.Conns.Up("b", t0)
	rs.Holding("ch", t0)
	rs.Expect("ch", t0)
	var a, b []Msg
	for i := 0; i < 6; i++ {
		a = append(a, send(pa, "a", i))
		b = append(b, send(pb, "b", i))
	}
	deliver := func(s *Sub, m Msg) {
		data, _ := json.Marshal(m)
		s.Deliver("ch", data)
	}
	for _, m := range a[:5] {
		deliver(plain, m) // a[5] reached no subscriber: it died with origin a
	}
	for _, m := range b {
		deliver(plain, m)
	}
	// rec was away between a[2] and b[4] (told by the disconnect, which excuses nothing here):
	// it misses b[3]; gets a[4] twice and b[2] after b[4].
	rs.Conns.Down(time.Unix(0, a[2].T))
	rs.Conns.Up("c", time.Unix(0, b[4].T))
	for _, m := range []Msg{a[0], a[1], a[2], b[0], b[1], b[4], b[2], a[3], a[4], a[4], b[5]} {
		deliver(rs, m)
	}
	rs.Answered("ch", false, 3, "past the retention bound")
	c, losses := r.AnalyzeRecovering(time.Now(), "a")
	want := RecoveryCounts{Subscribers: 1, Expected: 11, Delivered: 10, Lost: 1, Duplicated: 1, Reordered: 1, DiedWithOrigin: 1, Answers: 1, Incomplete: 1, Replayed: 3}
	if c != want || c.OK() {
		t.Fatalf("got %+v\nwant %+v\nlosses %+v", c, want, losses)
	}
	// The plain subscriber is accounted by Analyze alone, and the recovering one is not.
	pc, _ := r.Analyze(time.Now(), nil)
	if pc.Expected != 12 || pc.Delivered != 11 {
		t.Fatalf("Analyze: %+v", pc)
	}
	// Without the failed origin, a[5] is expected and lost too.
	if c, _ = r.AnalyzeRecovering(time.Now()); c.Lost != 2 || c.DiedWithOrigin != 0 {
		t.Fatalf("no failed origin: %+v", c)
	}
}
