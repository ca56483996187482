// Package checker accounts for every publication of a chaos scenario: publishers stamp each
// message with (publisher id, sequence, channel, origin node, send time), subscribers record
// every delivery and their connection history, and Analyze reports sent, expected, delivered,
// lost (detected or not), duplicated, reordered and leaked messages against the injected faults.
package checker

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Bounds of the accounting itself. Each is a named constant so the report can cite it.
const (
	// TellSlack: a loss counts as told to a client when that client's connection dropped (or
	// was not up) within this long of the publication's send time.
	TellSlack = 1 * time.Second
	// SilentTell: a client whose server stops answering (frozen for longer than the ping
	// timeout) notices only at its ping timeout (30 s by default), and closes the connection
	// then; a loss counts as told to a subscriber or publisher whose connection at the
	// publication's send time ended that way within this long (the ping timeout and a margin).
	// Publications without acknowledgement sent into a silent connection, and those a silent
	// server could not pass on, are what the disconnect tells the app it may have missed.
	SilentTell = 32 * time.Second
	// ResubscribeSettle: after a client (re)connects, its re-subscriptions take this long to be
	// live cluster-wide; a loss in that time is told (the client saw the disconnect).
	ResubscribeSettle = 2 * time.Second
	// LeakGrace: deliveries of a channel up to this long after the client unsubscribed it are
	// not leaks (the #unsubscribe may still be on the wire).
	LeakGrace = 1 * time.Second
	// UnsubscribeInFlight: publications sent up to this long before the client unsubscribed
	// are not expected (and not leaks if they arrive). They are still in flight — publisher →
	// its node → mesh → the subscriber's node — when the subscriber's #unsubscribe, which takes
	// the one direct hop, reaches that node; the node then correctly no longer delivers them.
	// The product promises nothing for a publication concurrent with an unsubscribe (there is no
	// order between two clients' messages on different nodes), so neither outcome is a loss.
	// Same size as the scenarios' in-flight slack before a fault.
	UnsubscribeInFlight = 1 * time.Second
)

// Msg is the payload of every chaos publication.
type Msg struct {
	P string `json:"p"`           // publisher id
	S int64  `json:"s"`           // publisher sequence (one counter across channels)
	C string `json:"c"`           // channel it was published on
	O string `json:"o"`           // node the publisher was connected to when sending
	T int64  `json:"t"`           // send time, Unix nanoseconds
	X string `json:"x,omitempty"` // padding
}

// ConnLog is a client's connection history: which node, from when to when.
type ConnLog struct {
	mu    sync.Mutex
	spans []span
}

type span struct {
	node     string
	up, down time.Time // down zero: still up
	// silent: the client ended it because the server went silent (ping timeout).
	silent bool
}

// Up records a connection to node at t.
func (l *ConnLog) Up(node string, t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.spans); n > 0 && l.spans[n-1].down.IsZero() {
		l.spans[n-1].down = t
	}
	l.spans = append(l.spans, span{node: node, up: t})
}

// Down records the end of the current connection at t.
func (l *ConnLog) Down(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.spans); n > 0 && l.spans[n-1].down.IsZero() {
		l.spans[n-1].down = t
	}
}

// DownSilent records the end of the current connection at t by the client's ping timeout:
// the server had been silent for that long, so the client was told (the disconnect) about
// everything it sent or was sent on this connection since (see SilentTell).
func (l *ConnLog) DownSilent(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.spans); n > 0 && l.spans[n-1].down.IsZero() {
		l.spans[n-1].down = t
		l.spans[n-1].silent = true
	}
}

// SilentEndWithin reports whether the connection up at t ended by the client's ping timeout
// within w after t.
func (l *ConnLog) SilentEndWithin(t time.Time, w time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.spans {
		if !t.Before(s.up) && (s.down.IsZero() || t.Before(s.down)) {
			return s.silent && !s.down.After(t.Add(w))
		}
	}
	return false
}

// Node returns the node of the current connection ("" when down).
func (l *ConnLog) Node() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.spans); n > 0 && l.spans[n-1].down.IsZero() {
		return l.spans[n-1].node
	}
	return ""
}

// Downs counts disconnects.
func (l *ConnLog) Downs() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := 0
	for _, s := range l.spans {
		if !s.down.IsZero() {
			d++
		}
	}
	return d
}

// NodeAt returns the node connected at t ("" when none).
func (l *ConnLog) NodeAt(t time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.spans {
		if !t.Before(s.up) && (s.down.IsZero() || t.Before(s.down)) {
			return s.node
		}
	}
	return ""
}

// Disturbed reports whether the connection was not steadily up through [t0, t1]: a
// connect or disconnect inside it, or no connection at t0.
func (l *ConnLog) Disturbed(t0, t1 time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	covered := false
	for _, s := range l.spans {
		if !s.up.Before(t0) && !s.up.After(t1) {
			return true
		}
		if !s.down.IsZero() && !s.down.Before(t0) && !s.down.After(t1) {
			return true
		}
		if !t0.Before(s.up) && (s.down.IsZero() || t0.Before(s.down)) {
			covered = true
		}
	}
	return !covered
}

// FirstUpAfter returns the first connection start after t, and the node.
func (l *ConnLog) FirstUpAfter(t time.Time) (time.Time, string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.spans {
		if s.up.After(t) {
			return s.up, s.node, true
		}
	}
	return time.Time{}, "", false
}

// Sent is one publication accepted by the publisher's client.
type Sent struct {
	Msg
	At time.Time
}

// Pub is a publisher's record.
type Pub struct {
	ID    string
	Conns ConnLog
	mu    sync.Mutex
	seq   int64
	sent  []Sent
	fails int
}

// Next stamps the next message for channel ch.
func (p *Pub) Next(ch, pad string) Msg {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := Msg{P: p.ID, S: p.seq, C: ch, O: p.Conns.Node(), T: time.Now().UnixNano(), X: pad}
	p.seq++
	return m
}

// Record notes the outcome of publishing m: err nil means it was sent.
func (p *Pub) Record(m Msg, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.fails++
		return
	}
	p.sent = append(p.sent, Sent{Msg: m, At: time.Unix(0, m.T)})
}

// SentCount is the number of publications sent so far.
func (p *Pub) SentCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sent)
}

// Delivery is one publication received by a subscriber.
type Delivery struct {
	Ch  string
	M   Msg
	Bad string // undecodable payload
	At  time.Time
}

type window struct{ from, to time.Time } // to zero: open

// expects reports whether a publication sent at t must reach a subscriber holding this window:
// from `from` on, and, once the window is closed by an unsubscribe, up to UnsubscribeInFlight
// before it (what was sent closer to the unsubscribe races it).
func (w window) expects(t time.Time) bool {
	return !t.Before(w.from) && (w.to.IsZero() || t.Before(w.to.Add(-UnsubscribeInFlight)))
}

// Sub is a subscriber's record.
type Sub struct {
	ID    string
	Conns ConnLog
	mu    sync.Mutex
	wins  map[string][]window
	subd  map[string][]window // when the client held the subscription (for leaks)
	got   []Delivery
	last  map[string]int64
	// recovering: the client resubscribes with its position (docs/recovery.md); accounted by
	// AnalyzeRecovering, with no loss excused by a disconnect.
	recovering bool
	answers    []Answer
}

// Answer is a node's answer to a recovering subscriber's resubscription.
type Answer struct {
	Ch        string
	Recovered bool
	Missed    int
	Reason    string
	At        time.Time
}

// SetRecovering marks the subscriber as one that recovers across reconnects.
func (s *Sub) SetRecovering() {
	s.mu.Lock()
	s.recovering = true
	s.mu.Unlock()
}

// Answered records a node's answer to a recovering resubscription.
func (s *Sub) Answered(ch string, recovered bool, missed int, reason string) {
	s.mu.Lock()
	s.answers = append(s.answers, Answer{Ch: ch, Recovered: recovered, Missed: missed, Reason: reason, At: time.Now()})
	s.mu.Unlock()
}

// OnRaw records a delivery (client.Options.RawPublish); it never consumes it.
func (s *Sub) OnRaw(ch, data []byte) bool {
	s.Deliver(string(ch), data)
	return false
}

// Deliver records a delivery of data on channel ch now.
func (s *Sub) Deliver(ch string, data []byte) {
	d := Delivery{Ch: ch, At: time.Now()}
	if err := json.Unmarshal(data, &d.M); err != nil || d.M.P == "" {
		d.Bad = string(data)
	}
	s.mu.Lock()
	s.got = append(s.got, d)
	if d.Bad == "" {
		if s.last == nil {
			s.last = map[string]int64{}
		}
		s.last[d.M.P] = d.M.S
	}
	s.mu.Unlock()
}

// Holding records that the client holds a subscription to ch from t (used for leaks).
func (s *Sub) Holding(ch string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subd == nil {
		s.subd = map[string][]window{}
	}
	s.subd[ch] = append(s.subd[ch], window{from: t})
}

// Expect records that from t every publication on ch must arrive (the subscription is live
// cluster-wide).
func (s *Sub) Expect(ch string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wins == nil {
		s.wins = map[string][]window{}
	}
	s.wins[ch] = append(s.wins[ch], window{from: t})
}

// Released records that the client unsubscribed ch at t: nothing sent after
// t-UnsubscribeInFlight is expected, and deliveries after t+LeakGrace are leaks.
func (s *Sub) Released(ch string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range []map[string][]window{s.wins, s.subd} {
		if ws := m[ch]; len(ws) > 0 && ws[len(ws)-1].to.IsZero() {
			ws[len(ws)-1].to = t
		}
	}
}

// Count is the number of deliveries so far; Last the last sequence seen from publisher p.
func (s *Sub) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// Last returns the last sequence received from publisher p.
func (s *Sub) Last(p string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.last[p]
	return v, ok
}

// Fault is an injected fault: losses are allowed on paths it crosses, from Start to
// End+Settle.
type Fault struct {
	Name       string
	Start, End time.Time
	Settle     time.Duration
	// Crosses reports whether the path from origin node to receiving node crosses the fault.
	Crosses func(origin, receiver string) bool
}

// NodeFault crosses every path to or from one of nodes.
func NodeFault(nodes ...string) func(string, string) bool {
	return func(o, r string) bool {
		for _, n := range nodes {
			if o == n || r == n || o == "" || r == "" {
				return true
			}
		}
		return false
	}
}

// SplitFault crosses every path between side a and side b (both directions).
func SplitFault(a, b []string) func(string, string) bool {
	in := func(x string, s []string) bool {
		for _, n := range s {
			if n == x {
				return true
			}
		}
		return false
	}
	return func(o, r string) bool {
		return o == "" || r == "" || (in(o, a) && in(r, b)) || (in(o, b) && in(r, a))
	}
}

// Recorder holds a scenario's publishers, subscribers and faults.
type Recorder struct {
	mu     sync.Mutex
	pubs   []*Pub
	subs   []*Sub
	faults []*Fault
}

// NewPub adds a publisher.
func (r *Recorder) NewPub(id string) *Pub {
	p := &Pub{ID: id}
	r.mu.Lock()
	r.pubs = append(r.pubs, p)
	r.mu.Unlock()
	return p
}

// NewSub adds a subscriber.
func (r *Recorder) NewSub(id string) *Sub {
	s := &Sub{ID: id}
	r.mu.Lock()
	r.subs = append(r.subs, s)
	r.mu.Unlock()
	return s
}

// AddFault registers a fault; set End (and keep the pointer) when it ends.
func (r *Recorder) AddFault(f *Fault) *Fault {
	r.mu.Lock()
	r.faults = append(r.faults, f)
	r.mu.Unlock()
	return f
}

// Counts is the message accounting of a scenario.
type Counts struct {
	Sent           int `json:"sent"`
	Expected       int `json:"expected"`
	Delivered      int `json:"delivered"` // expected deliveries that arrived
	Lost           int `json:"lost"`
	LostDetected   int `json:"lost_detected"`
	LostUndetected int `json:"lost_undetected"`
	LostOutside    int `json:"lost_outside_fault"` // lost on a path or at a time no fault allows
	LostTold       int `json:"lost_told"`          // detected because a client was disconnected
	LostGap        int `json:"lost_gap"`           // detected by a node's gap / dropped counters
	Duplicated     int `json:"duplicated"`
	Reordered      int `json:"reordered"`
	Leaked         int `json:"leaked"`
}

// OK reports whether the counts satisfy the promises: no undetected loss, no loss outside a
// fault, no duplicates, no reordering, no leaks.
func (c Counts) OK() bool {
	return c.LostUndetected == 0 && c.LostOutside == 0 && c.Duplicated == 0 && c.Reordered == 0 && c.Leaked == 0
}

// Pool gives, for the path origin → receiver, how many publications the nodes counted as
// lost on it (receiver's gaps from origin plus origin's drops for receiver) during the
// scenario.
type Pool func(origin, receiver string) int

// Loss describes one undetected or disallowed loss, for the log.
type Loss struct {
	Sub, Origin, Receiver string
	M                     Msg
	Why                   string
}

// Analyze accounts for every publication sent before end. Publications sent after `end`
// are ignored (the scenario's tail may still be in flight).
func (r *Recorder) Analyze(end time.Time, pool Pool) (Counts, []Loss) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c Counts
	byCh := map[string][]Sent{}
	pubs := map[string]*Pub{}
	for _, p := range r.pubs {
		pubs[p.ID] = p
		p.mu.Lock()
		for _, s := range p.sent {
			if s.At.Before(end) {
				byCh[s.C] = append(byCh[s.C], s)
				c.Sent++
			}
		}
		p.mu.Unlock()
	}
	type key = pubKey
	type pathKey struct{ o, r string }
	type pending struct {
		sub  string
		m    Msg
		recv string
	}
	var needPool []pending
	var losses []Loss
	lostOnPath := map[pathKey]map[key]bool{}
	for _, s := range r.subs {
		s.mu.Lock()
		if s.recovering {
			s.mu.Unlock()
			continue // AnalyzeRecovering
		}
		seen, leaked, dup, reord, ls := s.scan()
		c.Leaked += leaked
		c.Duplicated += dup
		c.Reordered += reord
		losses = append(losses, ls...)
		for ch, ws := range s.wins {
			for _, w := range ws {
				for _, m := range byCh[ch] {
					if !w.expects(m.At) {
						continue
					}
					c.Expected++
					if seen[key{m.P, m.S}] > 0 {
						c.Delivered++
						continue
					}
					c.Lost++
					recv := s.Conns.NodeAt(m.At)
					if !r.allowed(m.Msg, recv, s.Conns.NodeAt(m.At.Add(-ResubscribeSettle))) {
						c.LostOutside++
						losses = append(losses, Loss{s.ID, m.O, recv, m.Msg, "outside any fault window/path"})
					}
					told := s.Conns.Disturbed(m.At.Add(-ResubscribeSettle), m.At.Add(TellSlack)) || s.Conns.SilentEndWithin(m.At, SilentTell)
					if p := pubs[m.P]; p != nil && !told {
						told = p.Conns.Disturbed(m.At, m.At.Add(TellSlack)) || p.Conns.SilentEndWithin(m.At, SilentTell)
					}
					if told {
						c.LostDetected++
						c.LostTold++
						continue
					}
					if m.O == "" || recv == "" || m.O == recv {
						c.LostUndetected++
						losses = append(losses, Loss{s.ID, m.O, recv, m.Msg, "not told, no mesh path"})
						continue
					}
					pk := pathKey{m.O, recv}
					if lostOnPath[pk] == nil {
						lostOnPath[pk] = map[key]bool{}
					}
					lostOnPath[pk][key{m.P, m.S}] = true
					needPool = append(needPool, pending{s.ID, m.Msg, recv})
				}
			}
		}
		s.mu.Unlock()
	}
	// Distinct publications lost on a path must not exceed what the nodes counted on it.
	budget := map[pathKey]int{}
	for pk := range lostOnPath {
		budget[pk] = 0
		if pool != nil {
			budget[pk] = pool(pk.o, pk.r)
		}
	}
	sort.Slice(needPool, func(i, j int) bool { return needPool[i].m.T < needPool[j].m.T })
	used := map[pathKey]map[key]bool{}
	for _, np := range needPool {
		pk := pathKey{np.m.O, np.recv}
		k := key{np.m.P, np.m.S}
		if used[pk] == nil {
			used[pk] = map[key]bool{}
		}
		if used[pk][k] || len(used[pk]) < budget[pk] {
			used[pk][k] = true
			c.LostDetected++
			c.LostGap++
			continue
		}
		c.LostUndetected++
		losses = append(losses, Loss{np.sub, np.m.O, np.recv, np.m, fmt.Sprintf("path %s→%s lost %d distinct, nodes counted %d", pk.o, pk.r, len(lostOnPath[pk]), budget[pk])})
	}
	return c, losses
}

// pubKey names a publication: publisher and its sequence.
type pubKey struct {
	p string
	s int64
}

// scan counts s's deliveries: how often each publication arrived, and those leaked (not
// held, or undecodable), duplicated and reordered (per publisher and channel); s.mu held.
func (s *Sub) scan() (seen map[pubKey]int, leaked, dup, reord int, losses []Loss) {
	seen = map[pubKey]int{}
	lastSeq := map[string]int64{}
	for _, d := range s.got {
		if d.Bad != "" || d.M.C != d.Ch || !holds(s.subd[d.Ch], d.At) {
			leaked++
			continue
		}
		k := pubKey{d.M.P, d.M.S}
		if seen[k]++; seen[k] > 1 {
			dup++
			losses = append(losses, Loss{s.ID, d.M.O, s.Conns.NodeAt(d.At), d.M, "duplicated (delivered " + d.At.Format("15:04:05.000") + ")"})
			continue
		}
		lk := d.M.P + "\x00" + d.Ch
		if l, ok := lastSeq[lk]; ok && d.M.S < l {
			reord++
			losses = append(losses, Loss{s.ID, d.M.O, s.Conns.NodeAt(d.At), d.M, fmt.Sprintf("reordered: after %d", l)})
		} else {
			lastSeq[lk] = d.M.S
		}
	}
	return seen, leaked, dup, reord, losses
}

func holds(ws []window, t time.Time) bool {
	for _, w := range ws {
		if !t.Before(w.from.Add(-LeakGrace)) && (w.to.IsZero() || t.Before(w.to.Add(LeakGrace))) {
			return true
		}
	}
	return false
}

// allowed: a fault window covers the send time and the path crosses the fault, from the
// origin to the receiving node at send time or to the node the subscriber was on just before
// (a client that just moved because of the fault).
func (r *Recorder) allowed(m Msg, recv, prev string) bool {
	at := time.Unix(0, m.T)
	for _, f := range r.faults {
		end := f.End
		if end.IsZero() {
			end = time.Now()
		}
		if at.Before(f.Start) || at.After(end.Add(f.Settle)) {
			continue
		}
		if f.Crosses == nil || f.Crosses(m.O, recv) || f.Crosses(m.O, prev) {
			return true
		}
	}
	return false
}

// DeliveredBetween counts, for publications sent in [t0, t1) from origins in `from` to
// subscribers connected (at send time) to nodes in `to`, how many were expected and how
// many arrived.
func (r *Recorder) DeliveredBetween(t0, t1 time.Time, from, to map[string]bool) (expected, delivered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type key struct {
		p string
		s int64
	}
	byCh := map[string][]Sent{}
	for _, p := range r.pubs {
		p.mu.Lock()
		for _, s := range p.sent {
			if !s.At.Before(t0) && s.At.Before(t1) && from[s.O] {
				byCh[s.C] = append(byCh[s.C], s)
			}
		}
		p.mu.Unlock()
	}
	for _, s := range r.subs {
		s.mu.Lock()
		seen := map[key]bool{}
		for _, d := range s.got {
			seen[key{d.M.P, d.M.S}] = true
		}
		for ch, ws := range s.wins {
			for _, w := range ws {
				for _, m := range byCh[ch] {
					if !w.expects(m.At) || !to[s.Conns.NodeAt(m.At)] {
						continue
					}
					expected++
					if seen[key{m.P, m.S}] {
						delivered++
					}
				}
			}
		}
		s.mu.Unlock()
	}
	return
}

// SentBetween counts publications sent in [t0, t1) by origins in from.
func (r *Recorder) SentBetween(t0, t1 time.Time, from map[string]bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pubs {
		p.mu.Lock()
		for _, s := range p.sent {
			if !s.At.Before(t0) && s.At.Before(t1) && from[s.O] {
				n++
			}
		}
		p.mu.Unlock()
	}
	return n
}

// FirstAfter returns when the first delivery of a publication sent after t arrived.
func (s *Sub) FirstAfter(t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.got {
		if d.Bad == "" && d.M.T > t.UnixNano() {
			return d.At, true
		}
	}
	return time.Time{}, false
}

// SentAt returns when sequence seq was sent (zero if unknown).
func (p *Pub) SentAt(seq int64) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := sort.Search(len(p.sent), func(i int) bool { return p.sent[i].S >= seq })
	if i < len(p.sent) && p.sent[i].S == seq {
		return p.sent[i].At
	}
	return time.Time{}
}

// FirstAwayAfter returns when the first delivery of a publication sent after t arrived while
// the subscriber was connected to a node other than `away`.
func (s *Sub) FirstAwayAfter(t time.Time, away string) (time.Time, bool) {
	s.mu.Lock()
	got := append([]Delivery(nil), s.got...)
	s.mu.Unlock()
	for _, d := range got {
		if d.Bad == "" && d.M.T > t.UnixNano() {
			if n := s.Conns.NodeAt(d.At); n != "" && n != away {
				return d.At, true
			}
		}
	}
	return time.Time{}, false
}

// RecoveryCounts is the accounting of the subscribers that recover across reconnects.
type RecoveryCounts struct {
	Subscribers int `json:"subscribers"`
	Expected    int `json:"expected"`
	Delivered   int `json:"delivered"`
	Lost        int `json:"lost"`
	Duplicated  int `json:"duplicated"`
	Reordered   int `json:"reordered"`
	Leaked      int `json:"leaked"`
	// DiedWithOrigin: publications no subscriber at all received, from an origin node that
	// failed: they died with it before any other node held them, so no node can replay them
	// (not expected).
	DiedWithOrigin int `json:"died_with_origin"`
	// Answers to recovering resubscriptions, how many said incomplete, and how many
	// publications they replayed.
	Answers    int `json:"answers"`
	Incomplete int `json:"incomplete"`
	Replayed   int `json:"replayed"`
}

// OK: nothing lost, duplicated, reordered or leaked, and every recovery complete.
func (c RecoveryCounts) OK() bool {
	return c.Lost == 0 && c.Duplicated == 0 && c.Reordered == 0 && c.Leaked == 0 && c.Incomplete == 0
}

// AnalyzeRecovering accounts for the recovering subscribers: every publication sent before
// end on a channel they expect must arrive once and in per-publisher order, across any
// disconnect (none is excused), except those that no subscriber received at all and whose
// origin node is one of failed.
func (r *Recorder) AnalyzeRecovering(end time.Time, failed ...string) (RecoveryCounts, []Loss) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type key = pubKey
	var c RecoveryCounts
	byCh := map[string][]Sent{}
	for _, p := range r.pubs {
		p.mu.Lock()
		for _, s := range p.sent {
			if s.At.Before(end) {
				byCh[s.C] = append(byCh[s.C], s)
			}
		}
		p.mu.Unlock()
	}
	anyone := map[key]bool{}
	for _, s := range r.subs {
		s.mu.Lock()
		for _, d := range s.got {
			if d.Bad == "" {
				anyone[key{d.M.P, d.M.S}] = true
			}
		}
		s.mu.Unlock()
	}
	isFailed := func(n string) bool {
		for _, f := range failed {
			if n == f {
				return true
			}
		}
		return false
	}
	died := map[key]bool{}
	var losses []Loss
	for _, s := range r.subs {
		s.mu.Lock()
		if !s.recovering {
			s.mu.Unlock()
			continue
		}
		c.Subscribers++
		for _, a := range s.answers {
			c.Answers++
			c.Replayed += a.Missed
			if !a.Recovered {
				c.Incomplete++
				losses = append(losses, Loss{Sub: s.ID, Receiver: a.Ch, Why: "recovery incomplete: " + a.Reason})
			}
		}
		seen, leaked, dup, reord, ls := s.scan()
		c.Leaked += leaked
		c.Duplicated += dup
		c.Reordered += reord
		losses = append(losses, ls...)
		for ch, ws := range s.wins {
			for _, w := range ws {
				for _, m := range byCh[ch] {
					if !w.expects(m.At) {
						continue
					}
					k := key{m.P, m.S}
					if !anyone[k] && isFailed(m.O) {
						died[k] = true
						continue
					}
					c.Expected++
					if seen[k] > 0 {
						c.Delivered++
						continue
					}
					c.Lost++
					losses = append(losses, Loss{s.ID, m.O, s.Conns.NodeAt(m.At), m.Msg, "not recovered"})
				}
			}
		}
		s.mu.Unlock()
	}
	c.DiedWithOrigin = len(died)
	return c, losses
}
