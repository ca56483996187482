package mesh

import (
	"time"

	"golang.org/x/time/rate"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// Repair, origin side: a peer's RepairRequest is answered at once (RepairReply: what left the
// window, the link's last sequence), then one goroutine per link retransmits the range from the
// window, as ordinary batches marked retransmit. It is paced twice: by RepairRate (a token
// bucket in bytes), and by the peer's own send queue, whose writer it waits for from half of
// PeerBuffer (as the flusher does), so that a node catching up after a long freeze takes what
// its link can carry and no more, and other peers' traffic does not wait behind it.

// repairRequested handles p's request for publications it missed on our link to it. Called by
// p's reader goroutine.
func (m *Mesh) repairRequested(p *peer, r *meshpb.RepairRequest, now time.Time) {
	rep, job, start := p.tx.request(r.Epoch, r.From, r.To, now.UnixNano())
	m.sendRepairReply(p, rep)
	if start {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.retransmit(p, job)
		}()
	}
}

func (m *Mesh) sendRepairReply(p *peer, rep repairReply) {
	m.sendControl(p.mailboxB, &meshpb.Envelope{Target: p.serfName, Body: &meshpb.Envelope_RepairReply{RepairReply: &meshpb.RepairReply{
		Epoch: rep.epoch, LostFrom: rep.lostFrom, LostTo: rep.lostTo, Last: rep.last, CurrentEpoch: rep.current}}})
}

// retransmit sends job's range to p until it is done, p is removed, or the mesh closes.
func (m *Mesh) retransmit(p *peer, job uint64) {
	defer p.tx.abort(job)
	burst := max(m.cfg.BatchBytes, m.cfg.MaxFrame)
	lim := rate.NewLimiter(rate.Limit(m.cfg.RepairRate), burst)
	var (
		buf []publication
		enc []byte
	)
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-m.ctx.Done():
			return false
		case <-p.stop:
			return false
		case <-t.C:
			return true
		}
	}
	for {
		for m.conns.holdBack(p.serfName) {
			if !wait(5 * time.Millisecond) {
				return
			}
		}
		select {
		case <-m.ctx.Done():
			return
		case <-p.stop:
			return
		default:
		}
		now := time.Now().UnixNano()
		pubs, first, lostFrom, lostTo, done := p.tx.nextRepair(job, buf, m.cfg.BatchMax, m.cfg.BatchBytes, m.frameBudget(), now)
		buf = pubs
		if done {
			return
		}
		if lostTo != 0 {
			// Left the window while the job ran (age or bytes): say so, in order.
			st := p.tx.state()
			m.sendRepairReply(p, repairReply{epoch: st.epoch, lostFrom: lostFrom, lostTo: lostTo, last: st.seq, current: st.epoch})
		}
		if len(pubs) == 0 {
			continue
		}
		var (
			n  int
			ok bool
		)
		if enc, n, ok = m.sendBatch(enc, p, first, pubs, now, true); ok {
			p.retxC.Add(float64(len(pubs)))
		}
		clear(pubs)
		if r := lim.ReserveN(time.Now(), min(n, burst)); r.OK() {
			if d := r.Delay(); d > 0 && !wait(d) {
				return
			}
		}
	}
}
