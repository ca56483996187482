package client

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// notePub hands c a publication of channel "ch" from origin at sequence seq and time at (ms).
func notePub(c *Client, origin string, seq uint64, at int64) {
	c.notePosition("ch", []json.RawMessage{json.RawMessage(fmt.Sprintf("%q", origin)),
		json.RawMessage(fmt.Sprint(seq)), json.RawMessage(fmt.Sprint(at))})
}

// A position forgets origins not heard from within RecoverHorizon once another one appears,
// so that a client living through many restarts of publishing nodes (each a new origin)
// keeps a position of the origins that are publishing now, not of every one it ever heard.
func TestPositionForgetsOriginsPastTheHorizon(t *testing.T) {
	const hour = int64(time.Hour / time.Millisecond)
	newClient := func(h time.Duration) *Client {
		return &Client{opts: Options{Recover: true, RecoverHorizon: h}, subs: map[string]*subscription{"ch": {channel: "ch"}}}
	}
	// A publishing node restarted every 10 minutes for a week: 1,008 incarnations, each
	// publishing 5 times; a second, steady origin publishes throughout.
	run := func(c *Client) *position {
		for i := range int64(1008) {
			for k := range int64(5) {
				at := i*10*60*1000 + k*1000
				notePub(c, fmt.Sprintf("pub~%d", i), uint64(k+1), at)
				notePub(c, "steady", uint64(i*5+k+1), at+500)
			}
		}
		return c.subs["ch"].pos
	}

	p := run(newClient(0))
	// Forgetting happens when an origin appears: at pub~1007's first publication, those heard
	// within the hour before it are the last 7 incarnations (pub~1001 published until 4 s
	// after the hour's start) and "steady".
	if len(p.Seqs) != 8 || len(p.heard) != 8 {
		t.Fatalf("default horizon: %d origins kept (%d times), want 8", len(p.Seqs), len(p.heard))
	}
	for _, o := range []string{"steady", "pub~1001", "pub~1002", "pub~1003", "pub~1004", "pub~1005", "pub~1006", "pub~1007"} {
		if _, ok := p.Seqs[o]; !ok {
			t.Errorf("%s forgotten: %v", o, p.Seqs)
		}
	}
	if p.Seqs["steady"] != 5040 || p.Seqs["pub~1007"] != 5 || p.Seqs["pub~1001"] != 5 {
		t.Errorf("sequences of the kept origins changed: %v", p.Seqs)
	}
	b, _ := json.Marshal(map[string]*position{"recover": p})
	if len(b) > 300 {
		t.Errorf("the position sent is %d bytes: %s", len(b), b)
	}

	if p := run(newClient(-1)); len(p.Seqs) != 1009 {
		t.Errorf("a negative horizon forgets nothing: %d origins kept, want 1009", len(p.Seqs))
	}

	// The origin of the last publication stays even when the horizon is shorter than the gap
	// between the last two publications; an origin heard again is kept.
	c := newClient(time.Second)
	notePub(c, "a", 1, 0)
	notePub(c, "b", 1, 10_000)
	notePub(c, "a", 2, 10_500)
	notePub(c, "c", 1, 60_000)
	if p := c.subs["ch"].pos; len(p.Seqs) != 1 || p.Seqs["c"] != 1 || p.Time != 60_000 {
		t.Errorf("1 s horizon: %v at %d, want only c", p.Seqs, p.Time)
	}
	c = newClient(time.Minute)
	notePub(c, "a", 1, 0)
	notePub(c, "b", 1, 50_000)
	notePub(c, "a", 2, 100_000)
	notePub(c, "c", 1, 130_000)
	if p := c.subs["ch"].pos; len(p.Seqs) != 2 || p.Seqs["a"] != 2 || p.Seqs["c"] != 1 {
		t.Errorf("1 min horizon: %v, want a (heard again at 100 s) and c", p.Seqs)
	}
}
