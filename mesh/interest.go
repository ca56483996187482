package mesh

import (
	"slices"
	"time"
)

// This file is the interest table: a deterministic structure with no goroutines, no sockets and
// no clock of its own (time comes in as an argument). The mesh glue feeds it local transitions
// and what peers say, and does what it returns (send a delta, ask a peer for a snapshot). It is
// not safe for concurrent use; the mesh holds a lock around it.
//
// Local side: a refcount per channel. A 0→1 transition marks the channel pending; Flush turns
// everything pending into one delta (version+1, several when they would outgrow the message
// bound), so the mesh decides how often to announce: at once after a quiet period, gathered
// during a burst. A 1→0 transition is acted on only after RemoveDelay, and a re-add within the
// delay cancels it, so a quick unsubscribe/subscribe does not churn the cluster; a channel
// added and removed before a flush is never announced at all. Heartbeats and snapshots carry
// the announced set, never the pending changes.
//
// Peer side: for every peer, the exact set of channels it wants, the interest version it is at,
// and whether that set is known to be in sync. The route index (channel → peers) is what
// Publish reads, so routing is one map lookup whatever the number of channels.

// Delta is one announced change of an interest set: the channels added and removed in one
// step from Version-1 to Version.
type Delta struct {
	Version uint64
	Added   []string
	Removed []string
}

// Snapshot is a whole interest set at a version.
type Snapshot struct {
	Version  uint64
	Digest   uint64
	Channels []string
}

// Beat is what a heartbeat says about the sender's interest set.
type Beat struct {
	Version uint64
	Digest  uint64
	Count   int
}

// channelHash is FNV-1a 64; the digest of a set is the XOR of its members' hashes, so it is
// order-independent and updated in O(1) per change.
func channelHash(ch string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(ch); i++ {
		h ^= uint64(ch[i])
		h *= 1099511628211
	}
	// Avoid 0 so that a set containing one channel never digests like the empty set.
	return h | 1
}

// Digest returns the digest of a set of channels.
func Digest(channels []string) uint64 {
	var d uint64
	for _, ch := range channels {
		d ^= channelHash(ch)
	}
	return d
}

type localChannel struct {
	refs      int
	removeAt  time.Time // non-zero while a 1→0 transition waits for RemoveDelay
	announced bool      // peers have been told we want it
	due       bool      // the removal is due: to be announced at the next flush
}

type peerInterest struct {
	channels    map[string]struct{}
	version     uint64
	digest      uint64
	synced      bool      // set is known to match the peer at version
	requestedAt time.Time // last snapshot request; zero = none outstanding
}

// Table is the interest table of one mesh. P identifies a peer (the mesh uses *peer; tests use
// strings).
type Table[P comparable] struct {
	// RemoveDelay is how long a 1→0 transition waits before it is announced.
	RemoveDelay time.Duration
	// RequestRetry is how long to wait for a snapshot before asking again.
	RequestRetry time.Duration

	local   map[string]*localChannel // wanted or announced channels (including those waiting for removal)
	pending map[string]struct{}      // channels whose announcement is due at the next flush
	// addQ and removeQ hold the pending channels in the order they became pending, adds and
	// removals apart, so Flush takes the oldest first without sorting the whole backlog. An
	// entry is stale when the channel is no longer pending as that kind (re-added, removed
	// again); Flush skips it.
	addQ, removeQ fifo
	version       uint64 // of the announced set
	digest        uint64 // of the announced set
	announced     int    // channels in the announced set
	// removals are the 1→0 transitions waiting for RemoveDelay, in the order they happened
	// (so in due order): Expire looks only at those that are due, not at every channel.
	// An entry is stale when the channel was wanted again (or removed again later) since.
	removals []removal

	peers map[P]*peerInterest
	route map[string][]P
}

// NewTable returns an empty table.
func NewTable[P comparable](removeDelay, requestRetry time.Duration) *Table[P] {
	return &Table[P]{
		RemoveDelay:  removeDelay,
		RequestRetry: requestRetry,
		local:        make(map[string]*localChannel),
		pending:      make(map[string]struct{}),
		peers:        make(map[P]*peerInterest),
		route:        make(map[string][]P),
	}
}

type removal struct {
	ch string
	at time.Time
}

// ---- local side ----

// AddLocal records one more local subscriber group for ch. A new channel becomes pending; it
// reports whether there is something to flush.
func (t *Table[P]) AddLocal(ch string) bool {
	lc, ok := t.local[ch]
	if ok {
		lc.refs++
		lc.removeAt = time.Time{} // a re-add within the delay cancels the removal
		if lc.due {
			lc.due = false // announced and still wanted: nothing to say after all
			delete(t.pending, ch)
		} else if _, queued := t.pending[ch]; !lc.announced && !queued {
			t.pending[ch] = struct{}{} // Flush passed it over while nobody wanted it
			t.addQ.push(ch)
		}
		return len(t.pending) > 0
	}
	t.local[ch] = &localChannel{refs: 1}
	t.pending[ch] = struct{}{}
	t.addQ.push(ch)
	return true
}

// RemoveLocal records one less local subscriber group for ch. When the count reaches zero the
// removal is scheduled for now+RemoveDelay; Expire makes it pending. Unknown channels are
// ignored.
func (t *Table[P]) RemoveLocal(ch string, now time.Time) {
	lc, ok := t.local[ch]
	if !ok || lc.refs == 0 {
		return
	}
	lc.refs--
	if lc.refs == 0 {
		lc.removeAt = now.Add(t.RemoveDelay)
		t.removals = append(t.removals, removal{ch, lc.removeAt})
	}
}

// Expire makes the removals whose delay has passed by now pending (a channel never announced
// is simply forgotten). It reports whether there is something to flush.
func (t *Table[P]) Expire(now time.Time) bool {
	n := 0
	for ; n < len(t.removals) && !now.Before(t.removals[n].at); n++ {
		ch := t.removals[n].ch
		lc, ok := t.local[ch]
		if !ok || lc.refs != 0 || !lc.removeAt.Equal(t.removals[n].at) || lc.due {
			continue // wanted again, or removed again later (a later entry), or already due
		}
		if !lc.announced {
			delete(t.local, ch)
			delete(t.pending, ch)
			continue
		}
		lc.due = true
		t.pending[ch] = struct{}{}
		t.removeQ.push(ch)
	}
	if n > 0 {
		clear(t.removals[:n])
		t.removals = t.removals[n:]
		if len(t.removals) == 0 {
			t.removals = nil // give the backing array back after a burst
		}
	}
	return len(t.pending) > 0
}

// HasPending reports whether a flush would announce anything.
func (t *Table[P]) HasPending() bool { return len(t.pending) > 0 }

// deltaOverhead is what each channel adds to an encoded delta besides its name (tag, length).
const deltaOverhead = 4

// Flush announces what is pending: one delta of at most maxBytes of channel names (a single
// longer name still goes alone), or several with consecutive versions when maxMsgs allows;
// what does not fit stays pending. maxMsgs <= 0 means no limit. Additions go before removals,
// each oldest first: an addition is a client waiting for its first message, a removal only
// stops traffic nobody reads, so a subscribe made at the end of a burst of 100,000 changes is
// not queued behind the burst's removals. Each channel has one pending state, so announcing
// channels out of their order of change cannot reorder what one channel says.
func (t *Table[P]) Flush(maxBytes, maxMsgs int) []Delta {
	var out []Delta
	for len(t.pending) > 0 && (maxMsgs <= 0 || len(out) < maxMsgs) {
		d := Delta{Version: t.version + 1}
		size := 0
		for len(t.pending) > 0 {
			ch, ok := t.nextPending()
			if !ok {
				break
			}
			if size > 0 && size+len(ch)+deltaOverhead > maxBytes {
				break
			}
			size += len(ch) + deltaOverhead
			delete(t.pending, ch)
			lc := t.local[ch]
			if lc.due {
				t.removeQ.pop()
				delete(t.local, ch)
				t.announced--
				d.Removed = append(d.Removed, ch)
			} else {
				t.addQ.pop()
				lc.announced = true
				t.announced++
				d.Added = append(d.Added, ch)
			}
			t.digest ^= channelHash(ch)
		}
		if len(d.Added)+len(d.Removed) == 0 {
			break // only channels nobody wants any more were pending
		}
		t.version = d.Version
		out = append(out, d)
	}
	if len(t.pending) == 0 {
		t.addQ, t.removeQ = fifo{}, fifo{} // only stale entries are left
	}
	return out
}

// nextPending is the channel Flush announces next, at the head of addQ or else removeQ (stale
// entries before it are dropped); it stays queued until Flush pops it.
func (t *Table[P]) nextPending() (string, bool) {
	for t.addQ.len() > 0 {
		ch := t.addQ.peek()
		if _, ok := t.pending[ch]; ok && !t.local[ch].due {
			if t.local[ch].refs > 0 {
				return ch, true
			}
			// Subscribed and dropped before its turn: announcing it would only be followed by
			// its removal, so a subscribe/unsubscribe churn costs peers nothing. Expire forgets
			// it; AddLocal queues it again if it is wanted before that.
			delete(t.pending, ch)
		}
		t.addQ.pop()
	}
	for t.removeQ.len() > 0 {
		ch := t.removeQ.peek()
		if _, ok := t.pending[ch]; ok && t.local[ch].due {
			return ch, true
		}
		t.removeQ.pop()
	}
	return "", false
}

// fifo is a queue of channel names that gives its backing array back as it drains.
type fifo struct {
	s    []string
	head int
}

func (q *fifo) push(ch string) { q.s = append(q.s, ch) }
func (q *fifo) len() int       { return len(q.s) - q.head }
func (q *fifo) peek() string   { return q.s[q.head] }

func (q *fifo) pop() {
	q.s[q.head] = ""
	q.head++
	if q.head == len(q.s) {
		q.s, q.head = nil, 0
	} else if q.head >= 1024 && q.head*2 >= len(q.s) {
		q.s = append([]string(nil), q.s[q.head:]...)
		q.head = 0
	}
}

// WantsLocal reports whether ch is wanted or still announced here (a channel waiting for its
// delayed removal still counts: peers may still send it).
func (t *Table[P]) WantsLocal(ch string) bool {
	_, ok := t.local[ch]
	return ok
}

// LocalBeat is what the next heartbeat should say: the announced set.
func (t *Table[P]) LocalBeat() Beat {
	return Beat{Version: t.version, Digest: t.digest, Count: t.announced}
}

// LocalSnapshot is the whole announced local set, sorted.
func (t *Table[P]) LocalSnapshot() Snapshot {
	chs := make([]string, 0, t.announced)
	for ch, lc := range t.local {
		if lc.announced {
			chs = append(chs, ch)
		}
	}
	slices.Sort(chs)
	return Snapshot{Version: t.version, Digest: t.digest, Channels: chs}
}

// ---- peer side ----

// AddPeer starts tracking p with an empty, unsynced set. It reports whether p is new.
func (t *Table[P]) AddPeer(p P) bool {
	if _, ok := t.peers[p]; ok {
		return false
	}
	t.peers[p] = &peerInterest{channels: make(map[string]struct{})}
	return true
}

// RemovePeer forgets p and everything it wanted.
func (t *Table[P]) RemovePeer(p P) {
	pi, ok := t.peers[p]
	if !ok {
		return
	}
	for ch := range pi.channels {
		t.unroute(ch, p)
	}
	delete(t.peers, p)
}

// LinkUp records that the link from p is new or reconnected: what p wants may have changed
// unseen, so the set is marked unsynced (it keeps routing on the old set meanwhile). It returns
// true if a snapshot request should be sent now.
func (t *Table[P]) LinkUp(p P, now time.Time) bool {
	pi, ok := t.peers[p]
	if !ok {
		return false
	}
	pi.synced = false
	pi.requestedAt = time.Time{}
	return t.request(pi, now)
}

// PeerDelta applies a delta from p. It returns true if a snapshot request should be sent now
// (the delta showed that one was missed).
func (t *Table[P]) PeerDelta(p P, d Delta, now time.Time) bool {
	pi, ok := t.peers[p]
	if !ok {
		return false
	}
	if !pi.synced {
		// Waiting for a snapshot; the snapshot will include this change.
		return t.request(pi, now)
	}
	switch {
	case d.Version <= pi.version:
		return false // duplicate or old
	case d.Version == pi.version+1:
		for _, ch := range d.Added {
			t.applyPeer(p, pi, ch, true)
		}
		for _, ch := range d.Removed {
			t.applyPeer(p, pi, ch, false)
		}
		pi.version = d.Version
		return false
	default:
		pi.synced = false
		pi.requestedAt = time.Time{}
		return t.request(pi, now)
	}
}

// PeerSnapshot replaces p's set with s. A snapshot older than what a synced set already has is
// ignored.
func (t *Table[P]) PeerSnapshot(p P, s Snapshot) {
	pi, ok := t.peers[p]
	if !ok {
		return
	}
	if pi.synced && s.Version < pi.version {
		return
	}
	want := make(map[string]struct{}, len(s.Channels))
	for _, ch := range s.Channels {
		want[ch] = struct{}{}
	}
	for ch := range pi.channels {
		if _, keep := want[ch]; !keep {
			t.applyPeer(p, pi, ch, false)
		}
	}
	for ch := range want {
		t.applyPeer(p, pi, ch, true)
	}
	pi.version = s.Version
	pi.synced = true
	pi.requestedAt = time.Time{}
}

// PeerBeat checks p's heartbeat against what the table holds for p. It returns true if a
// snapshot request should be sent now: the set is unsynced (and no request is outstanding
// within RequestRetry), the peer is ahead, or the versions match but the digests do not.
func (t *Table[P]) PeerBeat(p P, b Beat, now time.Time) bool {
	pi, ok := t.peers[p]
	if !ok {
		return false
	}
	if pi.synced && (b.Version != pi.version || b.Digest != pi.digest || b.Count != len(pi.channels)) {
		pi.synced = false
		pi.requestedAt = time.Time{}
	}
	if pi.synced {
		return false
	}
	return t.request(pi, now)
}

// PeerListening records that p has just shown that it receives from us (it asked for our
// snapshot, which it does when its link from us comes up). A snapshot request of ours lost
// before that is worth repeating at once: it returns true if p's set is unsynced.
func (t *Table[P]) PeerListening(p P, now time.Time) bool {
	pi, ok := t.peers[p]
	if !ok || pi.synced {
		return false
	}
	pi.requestedAt = now
	return true
}

func (t *Table[P]) request(pi *peerInterest, now time.Time) bool {
	if !pi.requestedAt.IsZero() && now.Sub(pi.requestedAt) < t.RequestRetry {
		return false
	}
	pi.requestedAt = now
	return true
}

func (t *Table[P]) applyPeer(p P, pi *peerInterest, ch string, add bool) {
	_, has := pi.channels[ch]
	switch {
	case add && !has:
		pi.channels[ch] = struct{}{}
		pi.digest ^= channelHash(ch)
		t.route[ch] = append(t.route[ch], p)
	case !add && has:
		delete(pi.channels, ch)
		pi.digest ^= channelHash(ch)
		t.unroute(ch, p)
	}
}

func (t *Table[P]) unroute(ch string, p P) {
	ps := t.route[ch]
	for i, q := range ps {
		if q == p {
			// Copy rather than edit in place: Route's callers may still hold the old slice.
			n := make([]P, 0, len(ps)-1)
			n = append(n, ps[:i]...)
			n = append(n, ps[i+1:]...)
			ps = n
			break
		}
	}
	if len(ps) == 0 {
		delete(t.route, ch)
	} else {
		t.route[ch] = ps
	}
}

// Route returns the peers that want ch. The slice must not be modified; it stays valid (as a
// snapshot) after later changes to the table.
func (t *Table[P]) Route(ch string) []P {
	return t.route[ch]
}

// PeerSynced reports whether p's set is known to be in sync.
func (t *Table[P]) PeerSynced(p P) bool {
	pi, ok := t.peers[p]
	return ok && pi.synced
}

// PeerChannels returns the channels p wants, sorted.
func (t *Table[P]) PeerChannels(p P) []string {
	pi, ok := t.peers[p]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(pi.channels))
	for ch := range pi.channels {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}

// PeerCount returns how many channels p wants and the interest version the table has for it.
func (t *Table[P]) PeerCount(p P) (channels int, version uint64) {
	pi, ok := t.peers[p]
	if !ok {
		return 0, 0
	}
	return len(pi.channels), pi.version
}

// RoutedChannels is the number of channels at least one peer wants (for tests and status).
func (t *Table[P]) RoutedChannels() int { return len(t.route) }
