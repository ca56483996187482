package main

// `sockmesh bench`: load generation against any SocketCluster-compatible
// server, through client/bench.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockmesh/sockmesh/client/bench"
)

// runBench implements `sockmesh bench [flags]`.
func runBench(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return benchMain(ctx, args, os.Stdout, os.Stderr)
}

// pidList is a repeatable, comma-separated list of process ids.
type pidList []int

func (p *pidList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad pid %q", f)
		}
		*p = append(*p, n)
	}
	return nil
}

func benchMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `usage: sockmesh bench [flags]

Generates load against any SocketCluster-compatible server (or Centrifugo, with
--protocol centrifugo) and reports delivered messages/s, loss, latency
percentiles, server CPU/RSS (with --server-pid) and the
tool's own CPU. Scenarios:
  fanout    --subscribers S on one channel, --rate R publications/s in total
  channels  --connections C each on its own channel, acknowledged publications
            to random channels at --rate R (ack latency too)
  cross     fanout with subscribers spread over every --url, publishers on the first
  idle      --connections C (--channels K each) held for --duration; memory per
            connection from --server-pid's RSS
  connect   open --connections C as fast as --concurrency allows (handshake included)
  hold      --connections C (default 100000) each subscribed to one of
            --channels-total K channels, held for --duration (default 60s) with every
            ping answered; memory per connection, connect rate, disconnects during
            the hold, and halfway one publication to every channel: time until the
            first and the last of the C deliveries, server CPU of that fan-out
            (Linux, ws:// only: one goroutine drives every connection over epoll)
  max       ramp --of (fanout|channels|cross) from --rate by --step-factor every
            --step until p99 > --max-p99 or loss, then --refine steps between the
            last rate that passed and the first that failed; reports the best
            delivered rate

flags:
`)
		fs.PrintDefaults()
	}
	var (
		urls     = fs.String("url", envOr("SOCKMESH_URL", defaultURL), "comma-separated server URLs (cross: one per node; publishers use the first)")
		scenario = fs.String("scenario", "fanout", "fanout, channels, cross, idle, connect, hold or max")
		of       = fs.String("of", "fanout", "max: the scenario to ramp (fanout, channels, cross)")
		subs     = fs.Int("subscribers", 0, "fanout/cross subscribers (default 1000; also --connections when that is unset)")
		fanChans = fs.Int("fanout-channels", 1, "fanout/cross: spread the subscribers over this many channels (subscriber i on channel i % K), each publication to one at random")
		conns    = fs.Int("connections", 0, "channels/idle/connect/hold connections (default 5000 for channels, 100000 for hold, else 10000)")
		channels = fs.Int("channels", 0, "idle: channels subscribed per connection")
		chTotal  = fs.Int("channels-total", 1, "hold: channels the connections are spread over (connection i on channel i % K)")
		pubs     = fs.Int("publishers", 4, "publisher connections")
		rate     = fs.Float64("rate", 0, "publications per second in total (default fanout/cross 1000, channels 10000); max: the first step")
		ack      = fs.String("ack", "", "acknowledged publications: true or false (default: true for channels)")
		payload  = fs.Int("payload", 100, "payload size in bytes")
		duration = fs.Duration("duration", 5*time.Second, "measured time (idle and hold: time held; hold's default is 60s)")
		warmup   = fs.Duration("warmup", 2*time.Second, "publishing before the measurement (not counted)")
		step     = fs.Duration("step", 3*time.Second, "max: duration of each step")
		factor   = fs.Float64("step-factor", 1.5, "max: rate multiplier per step")
		maxP99   = fs.Duration("max-p99", 100*time.Millisecond, "max: stop when p99 latency exceeds this")
		maxSteps = fs.Int("max-steps", 30, "max: at most this many steps")
		refine   = fs.Int("refine", 0, "max: after the ramp stops, this many more steps halve the gap between the last rate that passed and the one that failed")
		conc     = fs.Int("concurrency", 200, "connections opened at once")
		drain    = fs.Duration("drain", 5*time.Second, "longest wait for late deliveries after publishing stops (hold: after the hold ends)")
		perSrc   = fs.Int("per-source-addr", 10000, "connections per source address 127.0.0.x when more go to a loopback server")
		connWith = fs.String("connector", "raw", "connect: raw (one goroutine over epoll, a fraction of the CPU per connection; Linux and ws:// only, else gorilla) or gorilla (gorilla/websocket, a goroutine per connection, as the other scenarios)")
		label    = fs.String("label", "", "name of the system under test, carried into every result")
		protocol = fs.String("protocol", "socketcluster", "client protocol: socketcluster, or centrifugo (Centrifugo's JSON protocol, for side-by-side runs)")
		asJSON   = fs.Bool("json", false, "print JSON lines on stdout (the table goes to stderr)")
		quiet    = fs.Bool("q", false, "no progress messages")
		cpuProf  = fs.String("cpuprofile", "", "write the tool's own CPU profile to this file")
		gcPct    = fs.Int("gc-percent", 400, "the tool's own GOGC: a load generator trades memory for CPU (scanning thousands of reader stacks was a tenth of its CPU at 100)")
		pids     pidList
	)
	fs.Var(&pids, "server-pid", "server process id(s) whose CPU and RSS to report (repeatable, comma-separated)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *scenario == "hold" && !set["duration"] {
		*duration = 0 // the scenario's own default
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gcPct)
	}
	cfg := bench.Config{
		Scenario: *scenario, MaxOf: *of, Subscribers: *subs, FanoutChannels: *fanChans, Connections: *conns, Channels: *channels, ChannelsTotal: *chTotal,
		Publishers: *pubs, Rate: *rate, Payload: *payload, Duration: *duration, Warmup: *warmup,
		StepDuration: *step, StepFactor: *factor, MaxP99: *maxP99, Refine: *refine, MaxSteps: *maxSteps, Concurrency: *conc, Drain: *drain,
		ServerPIDs: pids, PerSourceAddr: *perSrc, Connector: *connWith, Label: *label, Protocol: *protocol,
	}
	// One count flag is enough for the scenarios that use the other one.
	if cfg.Connections == 0 && *subs > 0 {
		cfg.Connections = *subs
	}
	if cfg.Subscribers == 0 && *conns > 0 {
		cfg.Subscribers = *conns
	}
	switch *ack {
	case "":
	case "true", "1", "yes":
		t := true
		cfg.Ack = &t
	case "false", "0", "no":
		f := false
		cfg.Ack = &f
	default:
		return fmt.Errorf("--ack: want true or false, got %q", *ack)
	}
	for _, u := range strings.Split(*urls, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		nu, err := normalizeURL(u)
		if err != nil {
			return err
		}
		cfg.URLs = append(cfg.URLs, nu)
	}
	if len(cfg.URLs) == 0 {
		return errors.New("no --url given")
	}
	table := stdout
	if *asJSON {
		table = stderr
		cfg.OnResult = func(r bench.Result) { _ = bench.WriteJSON(stdout, r) }
	}
	if !*quiet {
		cfg.Log = stderr
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	results, err := bench.Run(ctx, cfg)
	if len(results) > 0 {
		if terr := bench.WriteTable(table, results); terr != nil && err == nil {
			err = terr
		}
	}
	return err
}
