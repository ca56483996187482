package mesh

import (
	"errors"
	"time"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// Announcing local interest. A subscribe after a quiet moment is announced at once (one delta,
// sub-millisecond to be live on every peer); changes that follow within InterestFlushInterval
// are gathered and go out as one delta when it has passed, at most InterestMessageBytes of
// channel names each. So control traffic is bounded at InterestMessageBytes per interval
// (256 KiB per 20 ms by default) whatever clients do: a burst of 100,000 subscriptions is a
// few messages instead of 100,000, and it can never crowd publications out of a peer's queue
// (measured before: 100,000 one-channel deltas filled zmq4's shared PUB queue, whose
// high-water mark then dropped data batches). Snapshots go out in parts of the same size.

// announce flushes pending interest now if the last flush is InterestFlushInterval ago, or
// has interestLoop do it when it is. m.mu held.
func (m *Mesh) announce(now time.Time) {
	if !m.table.HasPending() {
		return
	}
	if now.Sub(m.lastFlush) >= m.cfg.InterestFlushInterval {
		m.flushInterest(now)
		return
	}
	m.scheduleFlush()
}

// scheduleFlush has interestLoop flush once the interval has passed. m.mu held.
func (m *Mesh) scheduleFlush() {
	if m.flushDue {
		return
	}
	m.flushDue = true
	select {
	case m.flushKick <- struct{}{}:
	default:
	}
}

// flushInterest sends one delta of what is pending. m.mu held.
func (m *Mesh) flushInterest(now time.Time) {
	for _, d := range m.table.Flush(m.interestBytes(), 1) {
		m.sendControl([]byte(controlTopic), &meshpb.Envelope{Body: &meshpb.Envelope_Delta{Delta: &meshpb.InterestDelta{
			Version: d.Version, Added: d.Added, Removed: d.Removed}}})
		m.met.interestMsgs.Inc()
		m.met.interestChanges.Add(float64(len(d.Added) + len(d.Removed)))
	}
	m.lastFlush = now
	if m.table.HasPending() {
		m.scheduleFlush()
	}
}

// interestBytes bounds one delta or snapshot part: InterestMessageBytes, within the frame limit.
func (m *Mesh) interestBytes() int {
	return min(m.cfg.InterestMessageBytes, m.frameBudget()/2)
}

// interestLoop flushes gathered interest changes once their interval has passed.
func (m *Mesh) interestLoop() {
	defer m.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.flushKick:
		}
		for {
			m.mu.Lock()
			wait := time.Until(m.lastFlush.Add(m.cfg.InterestFlushInterval))
			if wait <= 0 {
				m.flushDue = false
				m.flushInterest(time.Now()) // sets flushDue again if more is pending
				more := m.flushDue
				m.mu.Unlock()
				if !more {
					break
				}
				continue
			}
			m.mu.Unlock()
			t.Reset(wait)
			select {
			case <-m.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		// Kicks sent while this loop was flushing are already served.
		select {
		case <-m.flushKick:
		default:
		}
	}
}

// sendSnapshot sends our announced interest set to p, in parts within the message bound.
// m.mu held (it orders the parts with the deltas).
func (m *Mesh) sendSnapshot(p *peer) {
	s := m.table.LocalSnapshot()
	parts := splitChannels(s.Channels, m.interestBytes())
	for i, chs := range parts {
		m.sendControl(p.mailboxB, &meshpb.Envelope{Target: p.serfName, Body: &meshpb.Envelope_Snapshot{
			Snapshot: &meshpb.InterestSnapshot{Version: s.Version, Digest: s.Digest, Channels: chs,
				Part: uint32(i), Parts: uint32(len(parts))}}})
	}
}

// splitChannels cuts chs into runs of at most maxBytes of names (at least one channel each, and
// one empty run for an empty set).
func splitChannels(chs []string, maxBytes int) [][]string {
	out := [][]string{}
	start, size := 0, 0
	for i, ch := range chs {
		if i > start && size+len(ch)+deltaOverhead > maxBytes {
			out = append(out, chs[start:i])
			start, size = i, 0
		}
		size += len(ch) + deltaOverhead
	}
	return append(out, chs[start:])
}

// snapshotAssembly gathers the parts of one snapshot from a peer (its reader goroutine only).
type snapshotAssembly struct {
	version, digest uint64
	parts, next     uint32
	channels        []string
}

var (
	errSnapshotPart = errors.New("mesh: snapshot part out of order")
	errSnapshotSize = errors.New("mesh: snapshot larger than MaxPeerChannels")
)

// maxSnapshotParts bounds the parts a peer may announce; with the part size it bounds what an
// assembly can hold.
const maxSnapshotParts = 1 << 16

// addPart adds part s; it returns the whole set once the last part is in, and an error for a
// part that does not continue the assembly (which is then dropped).
func (a *snapshotAssembly) addPart(s *meshpb.InterestSnapshot, maxChannels int) (done bool, err error) {
	parts := max(s.Parts, 1)
	switch {
	case parts > maxSnapshotParts || s.Part >= parts:
		*a = snapshotAssembly{}
		return false, errSnapshotPart
	case s.Part == 0:
		*a = snapshotAssembly{version: s.Version, digest: s.Digest, parts: parts}
	case s.Part != a.next || s.Version != a.version || parts != a.parts:
		*a = snapshotAssembly{}
		return false, errSnapshotPart
	}
	if len(a.channels)+len(s.Channels) > maxChannels {
		*a = snapshotAssembly{}
		return false, errSnapshotSize
	}
	a.channels = append(a.channels, s.Channels...)
	a.next++
	return a.next == a.parts, nil
}
