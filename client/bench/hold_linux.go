//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// holdStep marks the payload of the hold scenario's publication to all.
const holdStep = 1

// hold opens C connections with the raw connector, each subscribed to one of
// K channels, holds them for the duration (the loop answers every ping) and,
// halfway, publishes once to every channel through one ordinary publisher
// connection and times the fan-out to all C. One goroutine drives every
// subscriber, so the tool's own cost stays a fraction of the server's.
func (r *runner) hold(ctx context.Context, emit func(Result)) error {
	cfg := r.cfg
	if r.wire != socketCluster {
		return errors.New("bench: hold speaks SocketCluster only (its connections are the raw connector's)")
	}
	if cfg.Connector == "gorilla" {
		return errors.New("bench: hold opens its connections with the raw connector only (a goroutine per connection would make the tool the limit)")
	}
	targets, err := rawTargets(cfg.URLs)
	if err != nil {
		return fmt.Errorf("bench: hold needs the raw connector: %w", err)
	}
	nConns, nChans := cfg.Connections, cfg.ChannelsTotal
	chans := make([]string, nChans)
	subFrames := make([][]byte, nChans)
	for k := range chans {
		chans[k] = "bench." + r.run + ".hold." + strconv.Itoa(k)
		subFrames[k] = appendFrame(nil, r.wire.subscribe(nil, chans[k], 2))
	}

	// The publisher first, so that the baseline RSS includes it.
	u0 := cfg.URLs[0]
	pub, err := dialConn(ctx, r, nConns, r.dialerFor(u0, nConns, nConns+1, 4<<10), u0, func(c *conn) {
		c.pub = &pubAcks{nextCid: setupCids}
	})
	if err != nil {
		return fmt.Errorf("bench: hold: the publisher connection: %w", err)
	}
	defer pub.close()

	before, srvOK := readProcs(cfg.ServerPIDs)
	l, err := newRawLoop(r, targets, &r.hist)
	if err != nil {
		return err
	}
	defer l.closeAll()
	l.subFrame = func(i int) []byte { return subFrames[i%nChans] }
	fan := &rawFanout{step: holdStep, done: make(chan struct{})}
	l.fan = fan
	l.stallAfter = l.timeout // 100,000 attempts at 20 s each would not end

	r.logf("opening %d connections, %d at a time, subscribed to %d channel(s)", nConns, cfg.Concurrency, nChans)
	start := time.Now()
	if err := l.run(ctx); err != nil {
		return err
	}
	openDur := time.Since(start)
	if err := ctx.Err(); err != nil {
		return err
	}
	subscribed, _ := readProcs(cfg.ServerPIDs)
	open := l.open
	downAtHold, pingsAtHold := l.down.Load(), l.pings
	r.logf("%d connections subscribed in %v (%d failed); holding %v", open, openDur.Round(time.Millisecond), l.failed, cfg.Duration)

	hctx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	served := make(chan error, 1)
	tool0 := selfCPU()
	holdStart := time.Now()
	holdEnd := holdStart.Add(cfg.Duration)
	go func() { served <- l.serve(hctx) }() // from here until it returns, only the loop touches l (atomics aside)

	var fo fanoutRun
	if sleepUntil(ctx, holdStart.Add(cfg.Duration/2)) {
		want := int64(open) - l.down.Load()
		r.logf("publishing once to each of %d channel(s): %d deliveries expected", nChans, want)
		fo = r.publishToAll(ctx, pub, chans, fan, want, holdEnd.Add(cfg.Drain))
	}
	sleepUntil(ctx, holdEnd)
	stopServe()
	serr := <-served
	holdDur := time.Since(holdStart)
	after, _ := readProcs(cfg.ServerPIDs)
	tool1 := selfCPU()
	if err := ctx.Err(); err != nil {
		return err
	}

	holdDown := int(l.down.Load() - downAtHold)
	res := Result{Scenario: "hold", URLs: join(cfg.URLs), Connections: open, Subscribers: open, Publishers: 1, Channels: nChans,
		PayloadBytes: cfg.Payload, ConnectErrors: l.failed, Concurrency: cfg.Concurrency, Connector: "raw",
		DurationSec: holdDur.Seconds(), OpenSec: openDur.Seconds(), Disconnects: int(l.down.Load()), HoldDisconnects: &holdDown,
		PingsAnswered: l.pings - pingsAtHold}
	if openDur > 0 {
		res.ConnectsPerSec = float64(open) / openDur.Seconds()
	}
	r.cpu(&res, subscribed, after, srvOK, tool1-tool0, holdDur)
	if srvOK {
		res.ServerRSSBeforeMiB = float64(before.rss) / (1 << 20)
		res.ServerRSSMiB = float64(subscribed.rss) / (1 << 20)
		res.ServerRSSEndMiB = float64(after.rss) / (1 << 20)
		if open > 0 {
			res.MemPerConnKiB = float64(subscribed.rss-before.rss) / float64(open) / 1024
		}
	} else if len(cfg.ServerPIDs) == 0 {
		res.Warnings = append(res.Warnings, "no --server-pid: memory per connection and the server's CPU unknown")
	} else {
		res.Warnings = append(res.Warnings, fmt.Sprintf("could not read /proc of --server-pid %v", cfg.ServerPIDs))
	}
	if l.failed > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d connections failed, the first with: %v", l.failed, r.firstConnErr.Load()))
	}
	if l.notStarted > 0 {
		res.NotAttempted = l.notStarted
		res.Warnings = append(res.Warnings, fmt.Sprintf("stopped opening connections after %d attempts: none completed for %v while others failed; %d not attempted",
			nConns-l.notStarted, time.Duration(l.stallAfter), l.notStarted))
	}
	if res.Disconnects > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d connections were closed by the server or broke after subscribing (%d during the hold), the first: %v",
			res.Disconnects, holdDown, l.firstDrop))
	}
	if serr != nil {
		res.Warnings = append(res.Warnings, "the connection loop failed during the hold, connections went unread: "+serr.Error())
	}
	r.fanoutResult(&res, l, fan, fo, pub, nChans)
	l.closeAll()
	emit(res)
	return nil
}

// fanoutRun is what publishToAll measured.
type fanoutRun struct {
	published bool
	complete  bool  // every expected delivery arrived before the deadline
	want      int64 // deliveries expected
	sentAt    int64 // r.now() stamped in the first publication
	firstAt   int64 // r.now() of the first delivery, as of completion
	lastAt    int64 // r.now() of the last delivery, as of completion
	srvNanos  int64
	srvOK     bool
	toolNanos int64
	err       error
}

// publishToAll publishes once to every channel (one write) stamped with the
// send time, and waits until want deliveries arrived or deadline. The
// server's CPU is read just before the write and as soon as the loop reports
// the last delivery.
func (r *runner) publishToAll(ctx context.Context, pub *conn, chans []string, f *rawFanout, want int64, deadline time.Time) fanoutRun {
	fr := fanoutRun{want: want}
	if want <= 0 {
		fr.err = errors.New("no connection left to publish to")
		return fr
	}
	f.want.Store(want)
	acks := pub.pub
	var buf, pkt []byte
	prefixes := make([][]byte, len(chans))
	for k, ch := range chans {
		prefixes[k] = r.wire.publishPrefix(ch)
	}
	srv0, srvOK := procsCPUPrecise(r.cfg.ServerPIDs)
	tool0 := selfCPU()
	for k := range chans {
		cid := acks.nextCid
		acks.nextCid++
		now := r.now()
		if k == 0 {
			fr.sentAt = now
		}
		pkt = append(pkt[:0], prefixes[k]...)
		pkt = AppendPayload(pkt, Payload{Step: holdStep, Seq: 1, SentNanos: now}, r.cfg.Payload)
		pkt = r.wire.endPublish(pkt, cid)
		acks.sent[cid&(ackWindow-1)].Store(now)
		acks.issued.Add(1)
		buf = appendFrame(buf, pkt)
	}
	if err := pub.writeRaw(buf); err != nil {
		fr.err = fmt.Errorf("publisher write failed: %w", err)
		return fr
	}
	fr.published = true
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-f.done:
		fr.complete = true
	case <-timer.C:
	case <-ctx.Done():
	}
	srv1, _ := procsCPUPrecise(r.cfg.ServerPIDs)
	fr.toolNanos = selfCPU() - tool0
	fr.srvNanos, fr.srvOK = srv1-srv0, srvOK
	fr.firstAt, fr.lastAt = f.firstAt.Load(), f.lastAt.Load()
	return fr
}

// fanoutResult fills the fan-out fields once the loop has stopped.
func (r *runner) fanoutResult(res *Result, l *rawLoop, f *rawFanout, fo fanoutRun, pub *conn, nChans int) {
	if !fo.published {
		if fo.err != nil {
			res.Warnings = append(res.Warnings, "publish to all not measured: "+fo.err.Error())
		} else {
			res.Warnings = append(res.Warnings, "publish to all not measured")
		}
		return
	}
	got := f.got
	res.FanoutDelivered = &got
	res.Expected, res.Delivered = fo.want, got
	receivers := 0
	for i := range l.conns {
		if l.conns[i].got > 0 {
			receivers++
		}
	}
	res.FanoutReceivers = receivers
	if lost := fo.want - int64(receivers); lost > 0 {
		res.Lost = lost
		res.LossPct = 100 * float64(lost) / float64(fo.want)
	}
	lastAt := fo.lastAt
	if !fo.complete {
		lastAt = f.lastAt.Load() // the latest that arrived at all
	}
	if fo.firstAt > 0 {
		res.FanoutFirstMs = ms(time.Duration(fo.firstAt - fo.sentAt))
	} else if fa := f.firstAt.Load(); fa > 0 {
		res.FanoutFirstMs = ms(time.Duration(fa - fo.sentAt))
	}
	if lastAt > 0 {
		res.FanoutAllMs = ms(time.Duration(lastAt - fo.sentAt))
		if res.FanoutAllMs > 0 {
			res.DeliveredPerSec = float64(got) / (res.FanoutAllMs / 1e3)
		}
	}
	if fo.srvOK {
		res.FanoutServerCPUMs = ms(time.Duration(fo.srvNanos))
	}
	res.FanoutToolCPUMs = ms(time.Duration(fo.toolNanos))
	snap := new(Snapshot)
	f.hist.AddTo(snap)
	res.setLatency(snap)
	if acks := pub.pub; acks != nil {
		res.Acked, res.AckErrors = acks.acked.Load(), acks.failed.Load()
		if res.AckErrors > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the server refused %d of the %d publications", res.AckErrors, nChans))
		} else if res.Acked < int64(nChans) {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%d of the %d publications were not acknowledged", int64(nChans)-res.Acked, nChans))
		}
	}
	if !fo.complete {
		res.Warnings = append(res.Warnings, fmt.Sprintf("publish to all incomplete: %d of %d connections got it by the deadline (the CPU figures cover until the wait ended)",
			receivers, fo.want))
	}
	if f.extra > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d deliveries to connections that already had one", f.extra))
	}
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
