package mesh

import (
	mrand "math/rand/v2"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Membership: each process start is its own Serf member, named logical name + "-" + a random
// incarnation id, with the logical name, incarnation, start time and endpoints in tags. A
// restarted node therefore never collides with its dead predecessor's Serf name (which memberlist
// would refuse for about 45 s on a new port); when two alive members carry one logical name,
// the one with the later start time wins and the other is not linked.
//
// Serf's EventCh is drained by our own goroutine (a slow consumer would stall memberlist) into a
// "dirty" signal; the reconcile goroutine waits MembershipCoalesce after a change, then compares
// the whole member list with the current links, so a burst of churn becomes one change of links.

const (
	tagName   = "name"
	tagInc    = "inc"
	tagStart  = "start"
	tagMesh   = "mesh"
	tagWS     = "ws"
	tagAdmin  = "admin"
	tagProto  = "mp"
	protoVers = "2" // 2: interest deltas carry many channels, snapshots come in parts
)

// Member is one logical node as Status reports it.
type Member struct {
	Name        string `json:"name"`
	Status      string `json:"status"` // alive | failed | left
	WS          string `json:"ws,omitempty"`
	Mesh        string `json:"mesh,omitempty"`
	Gossip      string `json:"gossip,omitempty"`
	Admin       string `json:"admin,omitempty"`
	Incarnation string `json:"incarnation,omitempty"`
}

type memberInfo struct {
	serfName string
	logical  string
	inc      string
	start    int64
	status   serf.MemberStatus
	member   Member
}

func infoOf(sm serf.Member) (memberInfo, bool) {
	name, ok := sm.Tags[tagName]
	if !ok || sm.Tags[tagProto] != protoVers {
		return memberInfo{}, false
	}
	start, _ := strconv.ParseInt(sm.Tags[tagStart], 10, 64)
	status := "failed"
	switch sm.Status {
	case serf.StatusAlive:
		status = "alive"
	case serf.StatusLeaving, serf.StatusLeft:
		status = "left"
	}
	return memberInfo{
		serfName: sm.Name,
		logical:  name,
		inc:      sm.Tags[tagInc],
		start:    start,
		status:   sm.Status,
		member: Member{
			Name:        name,
			Status:      status,
			WS:          sm.Tags[tagWS],
			Mesh:        sm.Tags[tagMesh],
			Gossip:      net.JoinHostPort(sm.Addr.String(), strconv.Itoa(int(sm.Port))),
			Admin:       sm.Tags[tagAdmin],
			Incarnation: sm.Tags[tagInc],
		},
	}, true
}

// newer reports whether a should represent its logical name rather than b.
func newer(a, b memberInfo) bool {
	aAlive, bAlive := a.status == serf.StatusAlive, b.status == serf.StatusAlive
	if aAlive != bAlive {
		return aAlive
	}
	if a.start != b.start {
		return a.start > b.start
	}
	return a.serfName > b.serfName
}

// members returns, per logical name, the incarnation that represents it, sorted by name.
func (m *Mesh) members() []memberInfo {
	best := make(map[string]memberInfo)
	for _, sm := range m.serf.Members() {
		mi, ok := infoOf(sm)
		if !ok {
			continue
		}
		if cur, seen := best[mi.logical]; !seen || newer(mi, cur) {
			best[mi.logical] = mi
		}
	}
	out := make([]memberInfo, 0, len(best))
	for _, mi := range best {
		out = append(out, mi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].logical < out[j].logical })
	return out
}

// drainEvents is the only reader of Serf's EventCh; it never blocks Serf.
func (m *Mesh) drainEvents(ch <-chan serf.Event) {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case ev := <-ch:
			if me, ok := ev.(serf.MemberEvent); ok {
				for _, mem := range me.Members {
					m.log.Debug("mesh: member event", "event", me.Type.String(), "member", mem.Name)
				}
				m.membershipChanged()
			}
		}
	}
}

func (m *Mesh) membershipChanged() {
	select {
	case m.memberCh <- struct{}{}:
	default:
	}
}

// reconcileLoop turns coalesced membership changes into link changes. It also re-checks every
// few seconds, which covers a missed event.
func (m *Mesh) reconcileLoop() {
	defer m.wg.Done()
	periodic := time.NewTicker(2 * time.Second)
	defer periodic.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-periodic.C:
		case <-m.memberCh:
			t := time.NewTimer(m.cfg.MembershipCoalesce)
			select {
			case <-m.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		m.reconcile()
	}
}

// reconcile makes the set of peers match the alive members: one peer per logical name other
// than ours, the newest incarnation.
func (m *Mesh) reconcile() {
	want := make(map[string]memberInfo)
	best := make(map[string]memberInfo) // by logical name
	alive := 0
	for _, mi := range m.members() {
		best[mi.logical] = mi
		if mi.status == serf.StatusAlive {
			alive++
		}
		if mi.logical == m.cfg.Name || mi.status != serf.StatusAlive || mi.member.Mesh == "" {
			continue
		}
		want[mi.serfName] = mi
	}
	m.met.members.Set(float64(alive))

	var removed, added []*peer
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return
	}
	now := time.Now()
	for name, p := range m.peers {
		if mi, ok := want[name]; !ok || mi.member.Mesh != p.meshEP {
			// Failed (not left, not replaced by a newer incarnation): it may come back.
			b, known := best[p.logical]
			failed := known && b.serfName == p.serfName && b.status == serf.StatusFailed
			if failed && p.hearing(now) {
				// Gossip says failed, but its heartbeats still arrive on our link: believe the
				// link. In a one-way partition the far side declares a node dead and gossips
				// it to this side before the node's refutation gets here; removing it would
				// cut a healthy path on this side. Reconciled again once the link is silent.
				m.log.Debug("mesh: peer failed by gossip but heard on its link; kept", "peer", p.logical)
				continue
			}
			m.removePeer(p, failed, now)
			removed = append(removed, p)
		}
	}
	for name, mi := range want {
		if _, ok := m.peers[name]; ok {
			continue
		}
		p := m.newPeer(mi)
		m.peers[name] = p
		m.table.AddPeer(p)
		added = append(added, p)
	}
	for _, p := range added {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			p.supervise()
		}()
	}
	m.mu.Unlock()

	replaced := make(map[string]bool)
	for _, p := range added {
		replaced[p.logical] = true
		m.log.Info("mesh: peer joined", "peer", p.logical, "incarnation", p.inc, "mesh", p.meshEP)
	}
	for _, p := range removed {
		m.log.Info("mesh: peer gone", "peer", p.logical, "incarnation", p.inc)
		m.retirePeer(p, replaced[p.logical])
		if !replaced[p.logical] {
			// A replacement incarnation under the same logical name keeps the series.
			m.met.linkUp.DeleteLabelValues(p.logical)
		}
	}
}

// removePeer takes p out of the peer map and the interest table. If p failed, what it wanted
// goes to the failed routes, so that publications for it count as drops until it (or its
// successor) is in sync again. m.mu held; retirePeer must follow, without m.mu.
func (m *Mesh) removePeer(p *peer, failed bool, now time.Time) {
	if failed {
		chs := m.table.PeerChannels(p)
		m.failed.Add(p.logical, p, chs, now)
		m.log.Info("mesh: peer failed; publications for it are kept in its retransmission window until it is back",
			"peer", p.logical, "incarnation", p.inc, "channels", len(chs), "ttl", m.failed.TTL)
	}
	m.table.RemovePeer(p)
	delete(m.peers, p.serfName)
	p.closeQueue()
}

// retirePeer stops a removed peer and remembers both directions of its link: our send link
// (sequence and retransmission window) and what we received from it. Publications that waited
// behind a repair go out now (the missing ones are lost); if a newer incarnation replaced it,
// whatever it had announced and we never got is lost too. Not called with m.mu held.
func (m *Mesh) retirePeer(p *peer, replaced bool) {
	p.shutdown()
	p.rmu.Lock()
	p.rx.flush(rxOut{p})
	if replaced && p.rx.epoch != 0 && p.rx.known >= p.rx.expect {
		rxOut{p}.lost(p.rx.known-p.rx.expect+1, lostRestarted)
		p.rx.expect = p.rx.known + 1
	}
	rx := p.rx
	p.rmu.Unlock()
	m.log.Debug("mesh: link state remembered", "peer", p.logical, "rx_epoch", rx.epoch, "rx_expect", rx.expect, "rx_known", rx.known, "tx_seq", p.tx.state().seq)
	m.rememberLink(p.serfName, linkMemo{rx: rx, tx: p.tx})
}

// A peer that is removed and comes back in the same incarnation (it was frozen, or partitioned,
// long enough to be declared failed) kept its own state for us, and we keep ours for it: both
// directions are remembered, bounded, per Serf name, and continue when the peer is added again.
// Our send link keeps numbering while the peer is away (failed routes) and keeps its window, so
// the peer, when back, sees one continuous sequence and asks for what it missed; our receive
// state continues too, so its continuing sequence is neither false gaps nor duplicates.
const linkMemoMax = 1024

// failedPeersMax bounds the failed routes (peers removed as failed and not back yet).
const failedPeersMax = 64

type linkMemo struct {
	rx rxLink
	tx *txLink
}

func (m *Mesh) rememberLink(serfName string, st linkMemo) {
	if st.rx.epoch == 0 && st.tx.state().seq == 0 {
		return // nothing was exchanged: a fresh start is the same
	}
	m.memoMu.Lock()
	defer m.memoMu.Unlock()
	if _, ok := m.linkMemo[serfName]; !ok && len(m.linkMemo) >= linkMemoMax {
		for k := range m.linkMemo { // drop an arbitrary entry
			delete(m.linkMemo, k)
			break
		}
	}
	m.linkMemo[serfName] = st
}

func (m *Mesh) recallLink(serfName string) linkMemo {
	m.memoMu.Lock()
	defer m.memoMu.Unlock()
	st := m.linkMemo[serfName]
	delete(m.linkMemo, serfName)
	return st
}

// rejoinLoop dials, every RejoinInterval (±25 %), the gossip address of each logical node whose
// newest incarnation failed, until the name is alive again or Serf reaps the member. A node that
// restarts on its address with no seeds of its own, or whose seeds are all gone, is then found
// within about one interval by every node that saw it fail. A dial to a dead address is one
// refused or unanswered connection; one to a node still partitioned away fails the same way.
// Members that left (drain, shutdown) are not dialled: they said goodbye.
func (m *Mesh) rejoinLoop() {
	defer m.wg.Done()
	every := m.cfg.RejoinInterval
	tick := time.NewTicker(every / 4)
	defer tick.Stop()
	type dial struct {
		at       time.Time
		answered bool
	}
	due := make(map[string]dial) // by failed Serf name
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		failed := make(map[string]bool)
		for _, mi := range m.members() {
			if mi.logical == m.cfg.Name || mi.status != serf.StatusFailed {
				continue
			}
			failed[mi.serfName] = true
			if m.ctx.Err() != nil {
				// Closing: a dial to a partitioned address takes memberlist's TCP timeout,
				// and the close waits for this loop.
				return
			}
			d, ok := due[mi.serfName]
			if ok && now.Before(d.at) {
				continue
			}
			d.at = now.Add(every*3/4 + mrand.N(every/2+1))
			_, err := m.serf.Join([]string{mi.member.Gossip}, true)
			switch {
			case err != nil:
				m.log.Debug("mesh: failed member's address does not answer", "peer", mi.logical, "gossip", mi.member.Gossip, "err", err)
			case !d.answered:
				// Said once per failed member: an address that answers but whose name stays
				// failed (another node took the port) is dialled on, quietly, until the reap.
				d.answered = true
				m.log.Info("mesh: a failed member's address answered; gossip rejoined", "peer", mi.logical, "gossip", mi.member.Gossip)
				m.membershipChanged()
			}
			due[mi.serfName] = d
		}
		for name := range due {
			if !failed[name] {
				delete(due, name)
			}
		}
	}
}
