package mesh

import "time"

// Failed peers. When gossip declares a peer failed (frozen, partitioned away, crashed: from here
// the three look the same), its link and its entry in the interest table go away, so Publish no
// longer routes anything to it. The publications it would have received would be lost, and the
// receiver, when it comes back, could not even see what was never numbered for it. FailedRoutes
// keeps what such a peer wanted (its channel set when it was removed), per logical name, so that
// every publication routed to it meanwhile is numbered into its link's retransmission window
// (retain.go): when it comes back it sees the numbers it missed and asks for them.
//
// A record ends when a peer with the same logical name is in sync again (the same incarnation
// after a freeze or a partition, or its successor after a restart: from then on the interest
// table routes to it), when it has lived TTL, or when more than Max peers are failed at once
// (the oldest goes). A graceful leave makes no record: nothing is lost to a node that drained
// its clients and said goodbye.
//
// Like Table it is a deterministic structure (no goroutines, time passed in), not safe for
// concurrent use (the mesh holds its lock), and Route is one map lookup whatever the number of
// channels or failed peers.

// FailedRoutes maps channels to the failed peers that wanted them. V is what a route yields for
// one failed peer (the mesh uses the removed *peer, whose send link keeps the publications).
type FailedRoutes[V comparable] struct {
	// TTL is how long a record is kept at most.
	TTL time.Duration
	// Max bounds the number of records.
	Max int

	byName map[string]*failedPeer[V]
	route  map[string][]V
}

type failedPeer[V comparable] struct {
	v        V
	channels []string
	until    time.Time
}

// NewFailedRoutes returns an empty set of failed routes.
func NewFailedRoutes[V comparable](ttl time.Duration, maxPeers int) *FailedRoutes[V] {
	return &FailedRoutes[V]{
		TTL:    ttl,
		Max:    max(maxPeers, 1),
		byName: make(map[string]*failedPeer[V]),
		route:  make(map[string][]V),
	}
}

// Add records that the peer named name, counted through v, failed while it wanted channels.
// If name already has a record (it failed again before it was back in sync, so the table knew
// little or nothing of what it wants now), the channel sets are merged and v replaces the old
// value. The record lives until now+TTL.
func (f *FailedRoutes[V]) Add(name string, v V, channels []string, now time.Time) {
	set := make(map[string]struct{}, len(channels))
	for _, ch := range channels {
		set[ch] = struct{}{}
	}
	if old, ok := f.byName[name]; ok {
		for _, ch := range old.channels {
			set[ch] = struct{}{}
		}
		f.Remove(name)
	}
	if len(set) == 0 {
		return
	}
	for len(f.byName) >= f.Max {
		f.Remove(f.oldest())
	}
	fp := &failedPeer[V]{v: v, channels: make([]string, 0, len(set)), until: now.Add(f.TTL)}
	for ch := range set {
		fp.channels = append(fp.channels, ch)
		f.route[ch] = append(f.route[ch], v)
	}
	f.byName[name] = fp
}

func (f *FailedRoutes[V]) oldest() string {
	var name string
	var until time.Time
	for n, fp := range f.byName {
		if name == "" || fp.until.Before(until) || (fp.until.Equal(until) && n < name) {
			name, until = n, fp.until
		}
	}
	return name
}

// Remove forgets the record of name, if any, and reports whether there was one.
func (f *FailedRoutes[V]) Remove(name string) bool {
	fp, ok := f.byName[name]
	if !ok {
		return false
	}
	for _, ch := range fp.channels {
		ps := f.route[ch]
		for i, q := range ps {
			if q == fp.v {
				// Copy rather than edit in place: Route's callers may still hold the old slice.
				n := make([]V, 0, len(ps)-1)
				n = append(n, ps[:i]...)
				ps = append(n, ps[i+1:]...)
				break
			}
		}
		if len(ps) == 0 {
			delete(f.route, ch)
		} else {
			f.route[ch] = ps
		}
	}
	delete(f.byName, name)
	return true
}

// Expire forgets the records whose TTL has passed by now and returns their names.
func (f *FailedRoutes[V]) Expire(now time.Time) []string {
	var out []string
	for name, fp := range f.byName {
		if !now.Before(fp.until) {
			out = append(out, name)
		}
	}
	for _, name := range out {
		f.Remove(name)
	}
	return out
}

// Route returns the failed peers that wanted ch. The slice must not be modified; it stays valid
// (as a snapshot) after later changes.
func (f *FailedRoutes[V]) Route(ch string) []V { return f.route[ch] }

// Has reports whether name has a record.
func (f *FailedRoutes[V]) Has(name string) bool {
	_, ok := f.byName[name]
	return ok
}

// Len is the number of records.
func (f *FailedRoutes[V]) Len() int { return len(f.byName) }
