package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// deliveries records the publications found in one frame of subscriber c.
// Runs on c's reader goroutine; allocates nothing.
func (r *runner) deliveries(c *conn, frame []byte) {
	step := r.activeStep.Load()
	now := r.now()
	h := r.hist.shard(c.idx)
	var n, stale, gaps, disorder int64
	rest := frame
	for {
		i := nextMarker(rest)
		if i < 0 {
			break
		}
		rest = rest[i:]
		p, used, ok := ParsePayload(rest)
		if !ok {
			rest = rest[len(marker):]
			continue
		}
		rest = rest[used:]
		if pi := int(p.Publisher); pi < len(c.lastSeq) {
			last := c.lastSeq[pi]
			switch {
			case p.Seq > last:
				if p.Step == step && step > 0 && last > 0 {
					gaps += int64(p.Seq - last - 1)
				}
				c.lastSeq[pi] = p.Seq
			default:
				disorder++
			}
		}
		if p.Step != step {
			stale++
			continue
		}
		h.Record(now - p.SentNanos)
		n++
	}
	if n > 0 {
		r.lastDelivery.Store(now)
	}
	if stale > 0 {
		r.stale.Add(stale)
	}
	if gaps > 0 {
		r.gaps.Add(gaps)
	}
	if disorder > 0 {
		r.disorder.Add(disorder)
	}
}

// publisher sends publications from one connection.
type publisher struct {
	c      *conn
	id     uint32
	prefix [][]byte // per channel: the publication up to its data (wire.publishPrefix)
	nextID int64    // ids of publications without acks (wire.ids)
	seqs   []uint32 // per channel
	rng    *rand.Rand
	ack    bool
	pkt    []byte
	buf    []byte
}

// trafficSetup is what a traffic scenario opened.
type trafficSetup struct {
	subs     []*conn
	pubs     []*publisher
	channels []string
	perPub   int64 // deliveries expected per publication
}

// traffic runs fanout, channels, cross and max.
func (r *runner) traffic(ctx context.Context, emit func(Result)) error {
	cfg := r.cfg
	kind := cfg.Scenario
	if kind == "max" {
		kind = cfg.MaxOf
	}
	ts, err := r.setupTraffic(ctx, kind)
	if err != nil {
		return err
	}
	defer func() {
		closeConns(ts.subs)
		pcs := make([]*conn, len(ts.pubs))
		for i, p := range ts.pubs {
			pcs[i] = p.c
		}
		closeConns(pcs)
	}()

	base := Result{
		Scenario: cfg.Scenario, Of: kind, Connections: len(ts.subs) + len(ts.pubs), Subscribers: len(ts.subs),
		Publishers: len(ts.pubs), Channels: len(ts.channels), PayloadBytes: cfg.Payload, Ack: *cfg.Ack, URLs: join(cfg.URLs),
	}
	if cfg.Scenario == "max" {
		base.Of = kind
	} else {
		base.Of = ""
	}
	if cfg.Warmup > 0 {
		r.logf("warm-up %v at %.0f publications/s", cfg.Warmup, cfg.Rate)
		r.step(ctx, ts, 0, cfg.Rate, cfg.Warmup)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if cfg.Scenario != "max" {
		r.logf("measuring %v at %.0f publications/s", cfg.Duration, cfg.Rate)
		res := r.step(ctx, ts, 1, cfg.Rate, cfg.Duration)
		res.fill(base)
		emit(res)
		return ctx.Err()
	}
	var best *Result
	var stops []string
	s := 0
	searchMax(cfg.Rate, cfg.StepFactor, cfg.MaxSteps, cfg.Refine, func(rate float64, refining bool) (bool, bool) {
		s++
		r.logf("step %d: %v at %.0f publications/s", s, cfg.StepDuration, rate)
		res := r.step(ctx, ts, uint32(s), rate, cfg.StepDuration)
		res.fill(base)
		res.Step = s
		emit(res)
		why := res.failure(cfg.MaxP99)
		switch {
		case why != "" && refining:
			stops = append(stops, "refining: "+why)
		case why != "":
			stops = append(stops, why)
		case refining:
			stops = append(stops, fmt.Sprintf("refining: step %d at %.0f/s passed", s, rate))
		}
		if why == "" {
			best = &res
			if res.ToolLimited {
				stops = append(stops, fmt.Sprintf("the tool reached its CPU limit at step %d", s))
			}
		}
		return why == "", why == "" && res.ToolLimited || ctx.Err() != nil
	})
	if len(stops) == 0 {
		stops = append(stops, "step limit reached")
	}
	stop := strings.Join(stops, "; ")
	sum := Result{Step: 0, Summary: true, StopReason: stop}
	if best != nil {
		sum = *best
		sum.Summary, sum.StopReason, sum.Step = true, stop, 0
		sum.MaxDeliveredPerSec = best.DeliveredPerSec
	} else {
		sum.fill(base)
		sum.Warnings = append(sum.Warnings, "no step passed")
	}
	emit(sum)
	return ctx.Err()
}

func (r *runner) setupTraffic(ctx context.Context, kind string) (*trafficSetup, error) {
	cfg := r.cfg
	ts := &trafficSetup{}
	nSubs := cfg.Subscribers
	if kind == "channels" {
		nSubs = cfg.Connections
		ts.channels = make([]string, nSubs)
		for i := range ts.channels {
			ts.channels[i] = "bench." + r.run + "." + strconv.Itoa(i)
		}
		ts.perPub = 1
	} else if k := cfg.FanoutChannels; k > 1 {
		// Subscriber i on channel i % k; each publication to one of them at random reaches
		// nSubs/k subscribers (nSubs is made a multiple of k).
		ts.channels = make([]string, k)
		for i := range ts.channels {
			ts.channels[i] = "bench." + r.run + ".fanout." + strconv.Itoa(i)
		}
		ts.perPub = int64(nSubs / k)
	} else {
		ts.channels = []string{"bench." + r.run + ".fanout"}
		ts.perPub = int64(nSubs)
	}
	total := nSubs + cfg.Publishers
	urls := cfg.URLs
	if kind == "fanout" || kind == "channels" {
		urls = urls[:1]
	}
	r.logf("opening %d subscribers on %s", nSubs, join(urls))
	t0 := time.Now()
	subs, _, err := r.openConns(ctx, nSubs, total, 0, 16<<10, func(i int) string { return urls[i%len(urls)] },
		func(c *conn) {
			c.sub = true
			c.lastSeq = make([]uint32, cfg.Publishers)
		},
		func(c *conn) error {
			ch := ts.channels[0]
			switch {
			case kind == "channels":
				ch = ts.channels[c.idx]
			case len(ts.channels) > 1:
				ch = ts.channels[c.idx%len(ts.channels)]
			}
			return c.subscribe(ctx, ch)
		}, nil, false)
	if err != nil {
		return nil, err
	}
	r.logf("%d subscribers ready in %v", len(subs), time.Since(t0).Round(time.Millisecond))
	pcs, _, err := r.openConns(ctx, cfg.Publishers, total, nSubs, 4<<10, func(int) string { return cfg.URLs[0] },
		func(c *conn) {
			if *cfg.Ack {
				c.pub = &pubAcks{nextCid: setupCids}
			}
		}, nil, nil, false)
	if err != nil {
		closeConns(subs)
		return nil, err
	}
	ts.subs = subs
	prefixes := make([][]byte, len(ts.channels))
	for i, ch := range ts.channels {
		prefixes[i] = r.wire.publishPrefix(ch)
	}
	for i, c := range pcs {
		p := &publisher{c: c, id: uint32(i), prefix: prefixes, seqs: make([]uint32, len(ts.channels)),
			rng: rand.New(rand.NewPCG(uint64(i)+1, uint64(time.Now().UnixNano()))), ack: *cfg.Ack}
		ts.pubs = append(ts.pubs, p)
	}
	// Cross-node interest takes a moment to propagate; without warm-up give it one.
	if kind == "cross" && cfg.Warmup == 0 {
		time.Sleep(200 * time.Millisecond)
	}
	return ts, nil
}

// step publishes at rate for d stamped with step s, waits for stragglers and
// measures.
func (r *runner) step(ctx context.Context, ts *trafficSetup, s uint32, rate float64, d time.Duration) Result {
	cfg := r.cfg
	r.hist.reset()
	r.ackHist.reset()
	r.ackErrors.Store(0)
	r.expected.Store(0)
	r.stale.Store(0)
	r.gaps.Store(0)
	r.disorder.Store(0)
	r.lastDelivery.Store(0)
	downBefore := connsDown(ts.subs)
	acksBefore := make([]int64, len(ts.pubs))
	for i, p := range ts.pubs {
		if p.c.pub != nil {
			acksBefore[i] = p.c.pub.acked.Load() + p.c.pub.failed.Load()
		}
	}
	r.activeStep.Store(s)

	srv0, srvOK := readProcs(cfg.ServerPIDs)
	tool0 := selfCPU()
	start := time.Now()
	startNs := r.now()
	var sent, skipped atomic.Int64
	var werr atomic.Value
	var wg sync.WaitGroup
	per := rate / float64(len(ts.pubs))
	for _, p := range ts.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, sk, err := r.publish(ctx, ts, p, s, per, d)
			sent.Add(n)
			skipped.Add(sk)
			if err != nil {
				werr.Store(err)
			}
		}()
	}
	wg.Wait()
	window := time.Since(start)
	srv1, _ := readProcs(cfg.ServerPIDs)
	tool1 := selfCPU()

	// Drain: until everything expected arrived (and every ack), or nothing
	// moved for a second, or Drain passed.
	expected := r.expected.Load()
	deadline := time.Now().Add(cfg.Drain)
	lastCount, lastMove := r.hist.count(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got := r.hist.count()
		if int64(got) >= expected && r.acksDone(ts, acksBefore, sent.Load()) {
			break
		}
		if got != lastCount {
			lastCount, lastMove = got, time.Now()
		} else if time.Since(lastMove) > time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.activeStep.Store(math.MaxUint32) // later arrivals are stale

	snap := r.hist.snapshot()
	res := Result{
		Step: int(s), TargetRate: rate, DurationSec: window.Seconds(),
		Published: sent.Load(), Skipped: skipped.Load(),
		Expected: expected, Delivered: int64(snap.N),
		Gaps: r.gaps.Load(), OutOfOrder: r.disorder.Load(),
		Disconnects: connsDown(ts.subs) - downBefore,
	}
	res.PublishRate = float64(res.Published) / window.Seconds()
	span := window
	if last := time.Duration(r.lastDelivery.Load() - startNs); last > span {
		span = last
	}
	res.DeliveredPerSec = float64(res.Delivered) / span.Seconds()
	if res.Expected > res.Delivered {
		res.Lost = res.Expected - res.Delivered
		res.LossPct = 100 * float64(res.Lost) / float64(res.Expected)
	}
	res.setLatency(snap)
	if *cfg.Ack {
		as := r.ackHist.snapshot()
		res.Acked = int64(as.N)
		res.AckErrors = r.ackErrors.Load()
		res.AckP50Ms, res.AckP99Ms, res.AckMaxMs = ms(as.Quantile(0.5)), ms(as.Quantile(0.99)), ms(time.Duration(as.Max))
	}
	if e, ok := werr.Load().(error); ok {
		res.Warnings = append(res.Warnings, "publisher write failed: "+e.Error())
	}
	r.cpu(&res, srv0, srv1, srvOK, tool1-tool0, window)
	if res.PublishRate < 0.95*rate {
		res.Warnings = append(res.Warnings, fmt.Sprintf("publishers sent %.0f/s of the %.0f/s asked (%d skipped): the server pushed back or the tool could not keep up", res.PublishRate, rate, res.Skipped))
	}
	if res.Disconnects > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d subscribers were disconnected by the server", res.Disconnects))
	}
	return res
}

// acksDone reports whether every publication sent in this step was answered.
func (r *runner) acksDone(ts *trafficSetup, before []int64, sent int64) bool {
	if !*r.cfg.Ack {
		return true
	}
	var got int64
	for i, p := range ts.pubs {
		got += p.c.pub.acked.Load() + p.c.pub.failed.Load() - before[i]
	}
	return got >= sent
}

// cpu fills the CPU and memory columns and the tool-limit warning.
func (r *runner) cpu(res *Result, srv0, srv1 procSample, srvOK bool, toolNanos int64, window time.Duration) {
	if srvOK {
		res.ServerCPU = 100 * float64(srv1.cpuNanos-srv0.cpuNanos) / float64(window)
		res.ServerRSSMiB = float64(srv1.rss) / (1 << 20)
	}
	res.ToolCPU = 100 * float64(toolNanos) / float64(window)
	res.ToolCPUs = usableCPUs()
	if res.ToolCPU >= 0.9*100*float64(res.ToolCPUs) {
		res.ToolLimited = true
		res.Warnings = append(res.Warnings, fmt.Sprintf("the tool used %.0f%% CPU of the %d%% it may use: the tool, not the server, was probably the limit", res.ToolCPU, 100*res.ToolCPUs))
	}
}

// publish runs one publisher for d at rate per second, stamping step s.
// Every millisecond it sends what is due, as one write; more than 50 ms of
// backlog (a stalled write) is skipped rather than sent in a burst.
func (r *runner) publish(ctx context.Context, ts *trafficSetup, p *publisher, s uint32, rate float64, d time.Duration) (sent, skipped int64, err error) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	maxBurst := int64(rate*0.05) + 1
	var done int64 // sent + skipped
	acks := p.c.pub
	for {
		select {
		case <-ctx.Done():
			return sent, skipped, nil
		case <-p.c.done:
			return sent, skipped, fmt.Errorf("connection closed: %w", p.c.readErr())
		case <-tick.C:
		}
		el := time.Since(start)
		if el > d {
			el = d
		}
		due := int64(rate * el.Seconds())
		n := due - done
		if n > maxBurst {
			skipped += n - maxBurst
			done += n - maxBurst
			n = maxBurst
		}
		p.buf = p.buf[:0]
		var k int64
		for ; k < n; k++ {
			ch := 0
			if len(p.prefix) > 1 {
				ch = p.rng.IntN(len(p.prefix))
			}
			var cid int64
			if acks != nil {
				if acks.inFlight() >= ackWindow-1 {
					skipped += n - k
					break
				}
				cid = acks.nextCid
				acks.nextCid++
			} else if r.wire.ids {
				// An id the answer is not waited for (publishers without acks ignore answers).
				p.nextID++
				cid = setupCids + p.nextID
			}
			p.seqs[ch]++
			now := r.now()
			b := append(p.pkt[:0], p.prefix[ch]...)
			b = AppendPayload(b, Payload{Step: s, Publisher: p.id, Seq: p.seqs[ch], SentNanos: now}, r.cfg.Payload)
			b = r.wire.endPublish(b, cid)
			if acks != nil {
				acks.sent[cid&(ackWindow-1)].Store(now)
				acks.issued.Add(1)
			}
			p.pkt = b
			p.buf = appendFrame(p.buf, b)
		}
		done += n
		if k > 0 {
			sent += k
			r.expected.Add(k * ts.perPub)
			if err := p.c.writeRaw(p.buf); err != nil {
				return sent, skipped, err
			}
		}
		if el >= d {
			return sent, skipped, nil
		}
	}
}

// idle holds C connections (K channels each) and reports memory per connection.
func (r *runner) idle(ctx context.Context, emit func(Result)) error {
	cfg := r.cfg
	before, srvOK := readProcs(cfg.ServerPIDs)
	tool0 := selfCPU()
	start := time.Now()
	r.logf("opening %d idle connections (%d channels each)", cfg.Connections, cfg.Channels)
	conns, failed, err := r.openConns(ctx, cfg.Connections, cfg.Connections, 0, 512, func(i int) string { return cfg.URLs[i%len(cfg.URLs)] },
		nil, func(c *conn) error {
			if cfg.Channels == 0 {
				return nil
			}
			chs := make([]string, cfg.Channels)
			for k := range chs {
				chs[k] = "bench." + r.run + ".idle." + strconv.Itoa(c.idx) + "." + strconv.Itoa(k)
			}
			return c.subscribe(ctx, chs...)
		}, nil, true)
	if err != nil {
		return err
	}
	defer closeConns(conns)
	opened := time.Since(start)
	r.logf("%d connections open in %v (%d failed); holding %v", len(conns), opened.Round(time.Millisecond), failed, cfg.Duration)
	mid, _ := readProcs(cfg.ServerPIDs)
	tmid := selfCPU()
	hold := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cfg.Duration):
	}
	after, _ := readProcs(cfg.ServerPIDs)
	res := Result{Scenario: "idle", URLs: join(cfg.URLs), Connections: len(conns), Channels: cfg.Channels * len(conns),
		ConnectErrors: failed, DurationSec: cfg.Duration.Seconds(), Disconnects: connsDown(conns)}
	r.cpu(&res, mid, after, srvOK, selfCPU()-tmid, time.Since(hold))
	_ = tool0
	if srvOK && len(conns) > 0 {
		res.ServerRSSBeforeMiB = float64(before.rss) / (1 << 20)
		res.MemPerConnKiB = float64(after.rss-before.rss) / float64(len(conns)) / 1024
	} else if len(cfg.ServerPIDs) == 0 {
		res.Warnings = append(res.Warnings, "no --server-pid: memory per connection unknown")
	}
	if failed > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d connections failed, the first with: %v", failed, r.firstConnErr.Load()))
	}
	emit(res)
	return nil
}

// openedConns is what the connect scenario opened.
type openedConns struct {
	open, failed int
	down         func() int // connections the server has closed since
	close        func()
}

// connect opens C connections as fast as the concurrency allows.
func (r *runner) connect(ctx context.Context, emit func(Result)) error {
	cfg := r.cfg
	srv0, srvOK := readProcs(cfg.ServerPIDs)
	tool0 := selfCPU()
	r.hist.reset()
	start := time.Now()
	r.logf("opening %d connections, %d at a time", cfg.Connections, cfg.Concurrency)
	connector := "raw"
	oc, raw, err := r.rawConnect(ctx, &r.hist)
	if !raw {
		connector = "gorilla"
		var conns []*conn
		conns, oc.failed, err = r.openConns(ctx, cfg.Connections, cfg.Connections, 0, 512, func(i int) string { return cfg.URLs[i%len(cfg.URLs)] },
			nil, nil, &r.hist, true)
		oc.open = len(conns)
		oc.down = func() int { return connsDown(conns) }
		oc.close = func() { closeConns(conns) }
	}
	if err != nil {
		return err
	}
	window := time.Since(start)
	srv1, _ := readProcs(cfg.ServerPIDs)
	tool1 := selfCPU()
	if cfg.windowEnd != nil {
		cfg.windowEnd()
	}
	snap := r.hist.snapshot()
	res := Result{Scenario: "connect", URLs: join(cfg.URLs), Connections: oc.open, ConnectErrors: oc.failed, Connector: connector,
		DurationSec: window.Seconds(), ConnectsPerSec: float64(oc.open) / window.Seconds(), Concurrency: cfg.Concurrency, Disconnects: oc.down()}
	res.setLatency(snap)
	r.cpu(&res, srv0, srv1, srvOK, tool1-tool0, window)
	if oc.failed > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d connections failed, the first with: %v", oc.failed, r.firstConnErr.Load()))
	}
	if res.Disconnects > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d connections were closed by the server before the window ended", res.Disconnects))
	}
	oc.close()
	emit(res)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// searchMax finds the highest rate that passes: try(rate, refining) runs one step and says
// whether it passed and whether the search must end there (the tool at its limit, the run
// cancelled). Rates start at start and grow by factor until a step fails (or maxSteps
// ran). Between the last rate that passed and the one that failed the limit is anywhere
// within that factor; refine more steps then halve the gap (geometrically), so the best
// rate that passed is within factor^(1/2^refine) of the limit rather than up to a whole
// step below it.
func searchMax(start, factor float64, maxSteps, refine int, try func(rate float64, refining bool) (passed, end bool)) {
	rate, lo := start, 0.0
	failed := false
	for i := 0; i < maxSteps && !failed; i++ {
		passed, end := try(rate, false)
		if end {
			return
		}
		if failed = !passed; passed {
			lo = rate
			rate *= factor
		}
	}
	if !failed || lo == 0 {
		return // never failed, or the first step did: no bracket to refine
	}
	hi := rate
	for i := 0; i < refine; i++ {
		mid := math.Sqrt(lo * hi)
		passed, end := try(mid, true)
		if end {
			return
		}
		if passed {
			lo = mid
		} else {
			hi = mid
		}
	}
}
