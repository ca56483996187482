package node

import (
	"sort"
	"strconv"
	"sync"
	"time"
)

// Recoveries that need the same range from a peer share one fetch. A node that dies leaves
// thousands of clients with, mostly, the same position (the last publication they all
// received); when they resubscribe on a node that was not receiving their channel, each one
// asking a peer separately made that peer refuse all but --mesh-fetch-rate of them a second
// (346 of 400 told "incomplete" in TestRecoveryBurstFromPeer). One fetch per channel and
// position is made instead: recoveries from that position while it is under way wait for
// it, and a complete answer is kept for later ones while this node keeps receiving the
// channel without a break (the ring continues where the fetched publications end), for
// the longest retention age and within RecoverConfig.ShareBytes.
type fetchShares struct {
	mu    sync.Mutex
	m     map[string]*sharedFetch
	bytes int // of the complete answers kept
	max   int
	ttl   time.Duration
}

// sharedFetch is one fetch for a channel and a position.
type sharedFetch struct {
	done chan struct{} // closed when the fields below are set
	// rg and since: the ring and when this node last began receiving the channel, when the
	// fetch was made; a later recovery may use the answer only while they are the same.
	rg       *ring
	since    int64
	pubs     []fetchedPub
	complete bool
	reason   string
	size     int
	expires  time.Time
	kept     bool // counted in fetchShares.bytes
}

func newFetchShares(maxBytes int, ttl time.Duration) *fetchShares {
	return &fetchShares{m: map[string]*sharedFetch{}, max: maxBytes, ttl: ttl}
}

// shareKey names a channel and a position canonically (origins sorted) and unambiguously:
// names are length-prefixed, so a client cannot craft a position whose key is another's and
// be given, or give another client, an answer fetched for a different position.
func shareKey(ch string, pos Position) string {
	origins := make([]string, 0, len(pos.Seqs))
	for o := range pos.Seqs {
		origins = append(origins, o)
	}
	sort.Strings(origins)
	b := make([]byte, 0, len(ch)+32*len(origins)+32)
	name := func(s string) {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
	}
	name(ch)
	b = strconv.AppendInt(b, pos.Time, 10)
	for _, o := range origins {
		b = append(b, ',')
		name(o)
		b = strconv.AppendUint(b, pos.Seqs[o], 10)
	}
	return string(b)
}

// do returns the answer of a fetch of ch from pos: the one under way or kept for this ring
// and since, or fetch's, made now and shared. shared reports that it was another's.
func (fs *fetchShares) do(ch string, pos Position, rg *ring, since int64, fetch func() ([]fetchedPub, bool, string)) (pubs []fetchedPub, complete bool, reason string, shared bool) {
	key := shareKey(ch, pos)
	now := time.Now()
	fs.mu.Lock()
	if f := fs.m[key]; f != nil {
		select {
		case <-f.done:
			if f.rg == rg && f.since == since && now.Before(f.expires) {
				fs.mu.Unlock()
				return f.pubs, f.complete, f.reason, true
			}
			fs.forget(key, f) // stale: this fetch replaces it
		default:
			if f.rg == rg && f.since == since {
				fs.mu.Unlock()
				<-f.done
				return f.pubs, f.complete, f.reason, true
			}
			// Under way for another ring or another period of receiving: not shared, and
			// not replaced (its maker removes it).
			fs.mu.Unlock()
			pubs, complete, reason = fetch()
			return pubs, complete, reason, false
		}
	}
	f := &sharedFetch{done: make(chan struct{}), rg: rg, since: since}
	fs.m[key] = f
	fs.mu.Unlock()

	f.pubs, f.complete, f.reason = fetch()
	for _, p := range f.pubs {
		f.size += len(p.data) + len(p.frame) + len(p.origin) + 64
	}
	f.size += len(key)
	fs.mu.Lock()
	f.expires = time.Now().Add(fs.ttl)
	close(f.done)
	// Only a complete answer is kept: an incomplete one (a peer that refused or did not
	// answer in time) is asked again by the next recovery.
	if !f.complete || fs.ttl <= 0 || f.size > fs.max {
		fs.forget(key, f)
	} else {
		f.kept = true
		fs.bytes += f.size
		fs.evict(now)
	}
	fs.mu.Unlock()
	return f.pubs, f.complete, f.reason, false
}

// forget removes f under key if it is still there; fs.mu held.
func (fs *fetchShares) forget(key string, f *sharedFetch) {
	if fs.m[key] != f {
		return
	}
	delete(fs.m, key)
	if f.kept {
		fs.bytes -= f.size
		f.kept = false
	}
}

// evict drops expired answers, then the soonest to expire, until the kept ones fit max;
// fs.mu held. Called only when an answer is added: the answers are few (one per channel and
// position recovered from a peer within ttl).
func (fs *fetchShares) evict(now time.Time) {
	for key, f := range fs.m {
		if done(f) && !now.Before(f.expires) {
			fs.forget(key, f)
		}
	}
	for fs.bytes > fs.max {
		var oldKey string
		var old *sharedFetch
		for key, f := range fs.m {
			if done(f) && (old == nil || f.expires.Before(old.expires)) {
				oldKey, old = key, f
			}
		}
		if old == nil {
			return
		}
		fs.forget(oldKey, old)
	}
}

func done(f *sharedFetch) bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}
