package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/sockmesh/sockmesh/wsfront"
)

// Recovery from a peer (docs/recovery.md): a client may resubscribe on a node that was not
// receiving its channel when it missed publications (the node restarted, or had no subscriber
// of the channel until now). That node asks a peer that receives the channel for what it keeps
// after the client's position, over the mesh (mesh.Fetch), while it begins receiving the
// channel itself; the client gets the peer's publications, then what this node kept since,
// each once, and is told whether that is all.

// Fetcher is the mesh as recovery uses it.
type Fetcher interface {
	// Fetch sends a request about channel to peer and returns its reply.
	Fetch(ctx context.Context, peer, channel string, request []byte) ([]byte, error)
	// Wanting lists the peers that receive channel.
	Wanting(channel string) []string
	// Alone reports whether this node has no peer (it is then every channel's only origin).
	Alone() bool
}

// SetFetcher lets recovery ask peers (the mesh). Without it a node replays only what it kept,
// and takes itself for alone.
func (b *Broker) SetFetcher(f Fetcher) {
	if b.rec != nil {
		b.rec.fetcher.Store(&f)
		b.rec.alone = f.Alone
	}
}

// Bounds of a recovery from a peer.
const (
	// interestSettle: a peer is asked no earlier than this long after this node began
	// receiving the channel (announced its interest), so that the channel's origins send here
	// before the peer answers (what they publish in between then reaches both; a hole between
	// the two is found and reported).
	interestSettle = 100 * time.Millisecond
	// fetchPeers: how many peers are tried for a complete answer.
	fetchPeers = 2
	// maxFetchPages bounds the replies of one recovery (each up to a mesh frame).
	maxFetchPages = 64
	// maxOriginLen bounds an origin name in a peer's reply (Serf names are far shorter).
	maxOriginLen = 512
	// maxFetchRequest bounds a peer's request, a position, before it is parsed: over 2,000
	// origins, far more than the nodes that publish on one channel within its retention. A
	// frame-sized request (1.1 MiB, some 35,000 origins) took about 25 ms to parse and look
	// up, and a member sending them at --mesh-fetch-rate (50/s) would have kept a core busy.
	maxFetchRequest = 64 << 10
)

// holdSub is the placeholder subscriber that keeps a node receiving a channel while a peer is
// asked; it takes nothing (the ring keeps the publications).
type holdSub struct{ _ byte }

func (*holdSub) Deliver([]byte) bool { return true }

// fetchedPub is one publication of a peer's reply.
type fetchedPub struct {
	origin string
	seq    uint64
	at     int64
	data   []byte
	frame  []byte // its #publish frame with the position, once encoded (shared by recoveries)
}

// Reply body: flags (1 recovered, 2 more), reason (uvarint length + bytes), then per
// publication origin (uvarint length + bytes), seq (uvarint), at (varint, unix ns), data
// (uvarint length + bytes).
const (
	flagRecovered = 1 << iota
	flagMore
)

var errBadReply = errors.New("recovery: malformed fetch reply")

// decodeFetchReply parses a peer's reply; a publication with an empty or oversized origin, a
// zero sequence or data that is not JSON makes the whole reply malformed (it would be
// forwarded to clients).
func decodeFetchReply(b []byte) (pubs []fetchedPub, recovered, more bool, reason string, err error) {
	if len(b) < 1 {
		return nil, false, false, "", errBadReply
	}
	flags := b[0]
	b = b[1:]
	bytesField := func(max int) ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) || n > uint64(max) {
			return nil, false
		}
		f := b[k : k+int(n)]
		b = b[k+int(n):]
		return f, true
	}
	r, ok := bytesField(1024)
	if !ok || !utf8.Valid(r) {
		return nil, false, false, "", errBadReply
	}
	for len(b) > 0 {
		o, ok := bytesField(maxOriginLen)
		if !ok || len(o) == 0 || !utf8.Valid(o) {
			return nil, false, false, "", errBadReply
		}
		seq, k := binary.Uvarint(b)
		if k <= 0 || seq == 0 {
			return nil, false, false, "", errBadReply
		}
		b = b[k:]
		at, k := binary.Varint(b)
		if k <= 0 {
			return nil, false, false, "", errBadReply
		}
		b = b[k:]
		d, ok := bytesField(len(b))
		if !ok || (len(d) > 0 && !json.Valid(d)) {
			return nil, false, false, "", errBadReply
		}
		pubs = append(pubs, fetchedPub{origin: string(o), seq: seq, at: at, data: d})
	}
	return pubs, flags&flagRecovered != 0, flags&flagMore != 0, string(r), nil
}

// ServeFetch answers a peer's request (mesh.Config.Fetch): the publications this node keeps
// on ch after the request's position, oldest first, as many as fit max bytes, and whether
// they are all the client missed (as for a client of this node).
func (b *Broker) ServeFetch(ch string, request []byte, max int) []byte {
	if len(request) > maxFetchRequest {
		return appendReplyHead(nil, false, false, "the request is larger than any position")
	}
	var pos Position
	if json.Unmarshal(request, &pos) != nil {
		return appendReplyHead(nil, false, false, "the request is not a position")
	}
	rg := b.rec.lockRingIfAny(ch)
	if rg == nil {
		return appendReplyHead(nil, false, false, "this node keeps nothing of the channel")
	}
	if !b.receiving(ch, rg) {
		// Without a subscriber this node may have stopped receiving the channel (its interest
		// is withdrawn after a delay): it cannot vouch for anything since.
		rg.mu.Unlock()
		return appendReplyHead(nil, false, false, "this node does not receive the channel")
	}
	bp := getReplayBuf()
	entries, ans, _ := rg.replay(*bp, pos, time.Now().UnixNano(), b.rec.cfg.ClockSkew, false)
	rg.mu.Unlock()
	defer putReplayBuf(bp, entries)
	more := false
	size := 1 + binary.MaxVarintLen64 + len(ans.Reason)
	n := 0
	for i := range entries {
		e := &entries[i]
		c := len(e.origin) + int(e.dataLen) + 4*binary.MaxVarintLen64
		if size+c > max {
			more = true
			break
		}
		size += c
		n++
	}
	out := appendReplyHead(make([]byte, 0, size), ans.Recovered, more, ans.Reason)
	for i := range entries[:n] {
		e := &entries[i]
		out = binary.AppendUvarint(out, uint64(len(e.origin)))
		out = append(out, e.origin...)
		out = binary.AppendUvarint(out, e.seq)
		out = binary.AppendVarint(out, e.at)
		out = binary.AppendUvarint(out, uint64(e.dataLen))
		out = append(out, e.data()...)
	}
	return out
}

func appendReplyHead(b []byte, recovered, more bool, reason string) []byte {
	var flags byte
	if recovered {
		flags |= flagRecovered
	}
	if more {
		flags |= flagMore
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(reason)))
	return append(b, reason...)
}

// fetchFrom asks peer for everything after pos, page by page; complete reports whether the
// peer vouched for all of it.
func (b *Broker) fetchFrom(ctx context.Context, f Fetcher, peer, ch string, pos Position) (pubs []fetchedPub, complete bool, reason string, err error) {
	req := Position{Seqs: map[string]uint64{}, Time: pos.Time}
	for o, s := range pos.Seqs {
		req.Seqs[o] = s
	}
	complete = true
	for page := 0; page < maxFetchPages; page++ {
		body, _ := json.Marshal(req)
		reply, err := f.Fetch(ctx, peer, ch, body)
		if err != nil {
			return pubs, false, "", err
		}
		got, rec, more, why, err := decodeFetchReply(reply)
		if err != nil {
			return pubs, false, "", err
		}
		if !rec && complete {
			complete, reason = false, why
		}
		for _, p := range got {
			if p.seq <= req.Seqs[p.origin] {
				continue // a peer repeating itself: nothing is sent twice
			}
			req.Seqs[p.origin] = p.seq
			pubs = append(pubs, p)
		}
		if !more {
			return pubs, complete, reason, nil
		}
		if len(got) == 0 {
			return pubs, false, "a peer's reply made no progress", nil
		}
	}
	return pubs, false, "the peer had more than a recovery takes", nil
}

// recoverLater completes a recovering subscription that waits its turn (replay publications
// at the replay rate) or that this node could not serve alone (peers not empty): it asks the
// peers that receive the channel (one after the other, until one vouches for all it sends),
// then, under the ring's lock, queues the peer's publications, then what this node kept after
// them, subscribes s and answers.
//
// since is when this node last began receiving the channel: a peer is asked no earlier than
// interestSettle after it (each of a burst of recovering clients waits for the same instant).
func (b *Broker) recoverLater(s *wsfront.Socket, ch string, rg *ring, pos Position, peers []string, hold *holdSub, since int64, replay int, answer func(any)) {
	defer b.UnsubscribeSub(hold, ch) // after s has joined: the interest does not flap
	if len(peers) > 0 {
		if d := time.Until(time.Unix(0, since).Add(interestSettle)); d > 0 {
			time.Sleep(d)
		}
	}
	if g := b.rec.replays; g != nil && replay > 0 {
		// Its turn: as many publications as the ring held for it when it subscribed (what a
		// peer adds is not known before it is asked, and is bounded by the fetch's own limits).
		_ = g.Wait(context.Background(), replay, 0)
	}
	if len(peers) == 0 {
		rg.mu.Lock() // not reclaimed: hold subscribes to it
		bp := getReplayBuf()
		kept, ans, _ := rg.replay(*bp, pos, time.Now().UnixNano(), b.rec.cfg.ClockSkew, false)
		b.finishRecovery(s, ch, rg, nil, kept, ans, "local", answer)
		putReplayBuf(bp, kept)
		return
	}
	pubs, complete, reason, shared := b.rec.shares.do(ch, pos, rg, since, func() ([]fetchedPub, bool, string) {
		return b.fetchPeers(ch, pos, peers)
	})
	source := "peer"
	if shared {
		source = "shared"
	}
	if g := b.rec.replays; g != nil && len(pubs) > 0 {
		// The peer's publications are replayed too: they take their turn of the node's
		// replay rate like the ring's (a storm through a peer was otherwise unpaced).
		_ = g.Wait(context.Background(), len(pubs), 0)
	}
	// What this node kept continues from the peer's publications, per origin.
	after := Position{Seqs: map[string]uint64{}, Time: pos.Time}
	for o, s := range pos.Seqs {
		after.Seqs[o] = s
	}
	for _, p := range pubs {
		if p.seq > after.Seqs[p.origin] {
			after.Seqs[p.origin] = p.seq
		}
	}
	rg.mu.Lock()
	bp := getReplayBuf()
	kept, ans, _ := rg.replay(*bp, after, time.Now().UnixNano(), b.rec.cfg.ClockSkew, complete)
	if !complete {
		ans.Recovered, ans.Reason = false, reason
	}
	b.finishRecovery(s, ch, rg, pubs, kept, ans, source, answer)
	putReplayBuf(bp, kept)
}

// fetchPeers asks the peers (one after the other, until one vouches for all it sends) for
// ch after pos, and encodes each publication's frame once for every recovery that shares it.
func (b *Broker) fetchPeers(ch string, pos Position, peers []string) (pubs []fetchedPub, complete bool, reason string) {
	b.rec.fetching <- struct{}{}
	defer func() { <-b.rec.fetching }()
	f := *b.rec.fetcher.Load()
	ctx, cancel := context.WithTimeout(context.Background(), b.rec.cfg.FetchTimeout)
	defer cancel()
	reason = "no peer answered"
	for i, p := range peers {
		if i == fetchPeers {
			break
		}
		got, ok, why, err := b.fetchFrom(ctx, f, p, ch, pos)
		if err != nil {
			why = "asking a peer failed: " + err.Error()
		}
		if ok || len(got) > len(pubs) || pubs == nil {
			pubs, complete, reason = got, ok, why
		}
		if ok {
			break
		}
	}
	for i := range pubs {
		pubs[i].frame, _ = encodeRetained(ch, pubs[i].data, pubs[i].origin, pubs[i].seq, pubs[i].at)
	}
	return pubs, complete, reason
}

// finishRecovery subscribes s (unless the client left meanwhile), queues its replay, releases
// the ring's lock (held) and answers.
func (b *Broker) finishRecovery(s *wsfront.Socket, ch string, rg *ring, fetched []fetchedPub, kept []retained, ans RecoverAnswer, source string, answer func(any)) {
	var joined bool
	if s.Holds(ch) {
		b.subscribe(s, ch)
		joined = true
	}
	ans = queueReplay(s, ch, fetched, kept, ans)
	rg.mu.Unlock()
	if joined && !s.Holds(ch) {
		b.UnsubscribeSub(s, ch) // the client left while it was being subscribed
	}
	b.m.recoveries.WithLabelValues(outcome(ans.Recovered), source).Inc()
	answer(ans)
}
