package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/chaos/checker"
)

// Profile: SOCKMESH_CHAOS=full runs every scenario at full length (`make chaos`); anything
// else runs the short profile (kill -9, partition proof and a short partition) that
// `make test` can afford.
var full = os.Getenv("SOCKMESH_CHAOS") == "full"

// Bounds and timings. Every bound a scenario asserts is one of these.
const (
	// ConvergeBound: a started cluster is converged (ready, all alive, links up and synced).
	ConvergeBound = 20 * time.Second
	// FailureDetectBound: after kill -9, every survivor shows the node failed (or gone) and
	// holds no up link from it (issue: aim ≤ 2 s on loopback).
	FailureDetectBound = 2 * time.Second
	// ClientRecoverBound: a client of a killed or drained node is connected to another node
	// from its URL list and receives again.
	ClientRecoverBound = 5 * time.Second
	// RejoinBound: a restarted node is ready, linked both ways and its interest known.
	RejoinBound = 15 * time.Second
	// FaultSettle: losses on paths crossing a fault are allowed up to this long after it ends.
	FaultSettle = 3 * time.Second
	// FreezeThroughputMin: while a node is frozen, publications between the healthy nodes
	// keep this fraction of what was sent.
	FreezeThroughputMin = 0.90
	// FreezeRSSGrowthMax: a healthy node's RSS grows by at most this much while a peer is frozen.
	FreezeRSSGrowthMaxKiB = 100 * 1024
	// FreezeRecoverBound: after SIGCONT the cluster is converged and delivering both ways.
	FreezeRecoverBound = 20 * time.Second
	// PartitionProofBound: once the rules are in, no packet crosses (checked by counters)
	// for this long, and each side sees the other failed within it.
	PartitionProofBound = 10 * time.Second
	// HealBound: after the heal, one cluster again, interest re-synced, cross-side delivery.
	HealBound = 20 * time.Second
	// DrainDuration: --drain-duration of every node (SIGTERM spreads client closes over it).
	DrainDuration = 2 * time.Second
	// DrainExitBound: a SIGTERMed node exits 0 within this long.
	DrainExitBound = DrainDuration + 10*time.Second
	// InterestCleanBound: after churn, no node keeps interest no client holds after this long.
	InterestCleanBound = 10 * time.Second
	// SlowCutBound: a client that stopped reading is closed with 4100 within this long of
	// its queue filling.
	SlowCutBound = 15 * time.Second
	// DeliverTailBound: after publishing stops, what is in flight arrives within this long.
	DeliverTailBound = 10 * time.Second

	MetricsSampleEvery = 250 * time.Millisecond
	PublishTick        = 10 * time.Millisecond
	ClientMinBackoff   = 50 * time.Millisecond
	ClientMaxBackoff   = 500 * time.Millisecond
)

// Durations that differ by profile.
func partitionFor() time.Duration {
	if full {
		return 20 * time.Second
	}
	return 5 * time.Second
}

func churnFor() time.Duration {
	if full {
		return 60 * time.Second
	}
	return 10 * time.Second
}

func needFull(t *testing.T) {
	if !full {
		t.Skip("full profile only (SOCKMESH_CHAOS=full, `make chaos`)")
	}
}

// measure is one asserted bound.
type measure struct {
	Name     string `json:"name"`
	Bound    string `json:"bound"`
	Measured string `json:"measured"`
	OK       bool   `json:"ok"`
}

type result struct {
	Scenario string         `json:"scenario"`
	Measures []measure      `json:"measures"`
	Counts   checker.Counts `json:"counts"`
	// What the nodes repaired (publications that arrived by retransmission) and what they
	// counted as lost beyond the origin's retransmission window, per their metrics.
	Repaired         int      `json:"repaired"`
	LostBeyondWindow int      `json:"lost_beyond_window"`
	Notes            []string `json:"notes,omitempty"`
	// Recovery: the subscribers that resubscribe with their position (docs/recovery.md).
	Recovery *checker.RecoveryCounts `json:"recovery,omitempty"`
	Pass     bool                    `json:"pass"`
	Seconds  float64                 `json:"seconds"`
}

var (
	resultsMu sync.Mutex
	results   []*result
)

type scenario struct {
	t     *testing.T
	r     *result
	start time.Time
}

func newScenario(t *testing.T, name string) *scenario {
	sc := &scenario{t: t, r: &result{Scenario: name}, start: time.Now()}
	t.Cleanup(func() {
		sc.r.Seconds = time.Since(sc.start).Seconds()
		sc.r.Pass = !t.Failed()
		if t.Skipped() {
			return
		}
		resultsMu.Lock()
		results = append(results, sc.r)
		resultsMu.Unlock()
	})
	return sc
}

// bound records a measured value against a bound; a miss fails the test.
func (sc *scenario) bound(name string, bound, measured any, ok bool) {
	sc.t.Helper()
	m := measure{Name: name, Bound: fmt.Sprint(bound), Measured: fmt.Sprint(measured), OK: ok}
	sc.r.Measures = append(sc.r.Measures, m)
	if !ok {
		sc.t.Errorf("%s: measured %s, bound %s", name, m.Measured, m.Bound)
	}
	sc.t.Logf("%s: measured %s (bound %s)", name, m.Measured, m.Bound)
}

func (sc *scenario) note(format string, args ...any) {
	sc.t.Helper()
	s := fmt.Sprintf(format, args...)
	sc.r.Notes = append(sc.r.Notes, s)
	sc.t.Log(s)
}

// account runs the checker and records (and asserts) the counts.
func (sc *scenario) account(l *load, end time.Time, tr *metricsTracker) checker.Counts {
	sc.t.Helper()
	var pool checker.Pool
	if tr != nil {
		pool = tr.pool
	}
	c, losses := l.rec.Analyze(end, pool)
	sc.r.Counts = c
	if tr != nil {
		g, d := tr.totals()
		sc.r.Repaired = tr.sum("sockmesh_mesh_repaired_messages_total", "")
		sc.r.LostBeyondWindow = tr.sum("sockmesh_mesh_unrepaired_messages_total", "beyond_window")
		sc.note("nodes counted %d gaps (unrepaired) and %d dropped publications; %d repaired by retransmission, %d duplicates skipped, %d lost beyond the window",
			g, d, sc.r.Repaired, tr.sum("sockmesh_mesh_duplicate_messages_total", ""), sc.r.LostBeyondWindow)
	}
	sc.logLosses("loss", losses)
	sc.t.Logf("counts: %+v", c)
	if !c.OK() {
		sc.t.Errorf("accounting failed: %d undetected losses, %d losses outside any fault, %d duplicated, %d reordered, %d leaked",
			c.LostUndetected, c.LostOutside, c.Duplicated, c.Reordered, c.Leaked)
	}
	if c.Expected == 0 || c.Sent == 0 {
		sc.t.Errorf("nothing was expected: the load did not run")
	}
	return c
}

// logLosses logs the first 20 losses.
func (sc *scenario) logLosses(what string, losses []checker.Loss) {
	sc.t.Helper()
	for i, ls := range losses {
		if i == 20 {
			sc.t.Logf("... %d more", len(losses)-20)
			break
		}
		sc.t.Logf("%s: sub %s %s→%s pub %s seq %d ch %s at %s: %s", what, ls.Sub, ls.Origin, ls.Receiver, ls.M.P, ls.M.S, ls.M.C, time.Unix(0, ls.M.T).Format("15:04:05.000"), ls.Why)
	}
}

// recovered asserts the promise of recovery (docs/recovery.md): subscribers that resubscribe
// with their position receive every publication once and in order across their reconnects —
// none excused by the disconnect — and every node's answer says the recovery was complete.
// Publications that died with a failed origin before any other node held them are counted
// apart (no node can replay them). want is how many recovering subscribers must have been
// moved (answered at least once).
func (sc *scenario) recovered(l *load, end time.Time, wantAnswers int) {
	sc.t.Helper()
	rc, losses := l.rec.AnalyzeRecovering(end, l.failed...)
	sc.r.Recovery = &rc
	sc.logLosses("recovery loss", losses)
	sc.t.Logf("recovery counts: %+v", rc)
	sc.bound("recovering clients: lost, duplicated, reordered, incomplete recoveries", "= 0, 0, 0, 0",
		fmt.Sprintf("%d, %d, %d, %d (%d expected, %d replayed in %d recoveries)", rc.Lost, rc.Duplicated, rc.Reordered, rc.Incomplete, rc.Expected, rc.Replayed, rc.Answers), rc.OK() && rc.Expected > 0)
	sc.bound("recovering resubscriptions answered", fmt.Sprintf("≥ %d", wantAnswers), rc.Answers, rc.Answers >= wantAnswers)
	if rc.DiedWithOrigin > 0 {
		sc.note("%d publications died with their failed origin before any node held them (no client received them; not expected)", rc.DiedWithOrigin)
	}
}

// repairedAll asserts the promise of the repair window: every client that stayed connected
// received every publication exactly once and in per-publisher order (a loss is allowed only
// where the client was disconnected and so told).
func (sc *scenario) repairedAll(c checker.Counts) {
	sc.t.Helper()
	silent := c.Lost - c.LostTold
	sc.bound("publications lost for clients that stayed connected, duplicated, reordered", "= 0, 0, 0",
		fmt.Sprintf("%d, %d, %d (repaired %d)", silent, c.Duplicated, c.Reordered, sc.r.Repaired), silent == 0 && c.Duplicated == 0 && c.Reordered == 0)
}

func TestMain(m *testing.M) {
	code := m.Run()
	resultsMu.Lock()
	rs := append([]*result(nil), results...)
	resultsMu.Unlock()
	if len(rs) > 0 {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].Scenario < rs[j].Scenario })
		profile := "short"
		if full {
			profile = "full"
		}
		table := renderTable(rs)
		fmt.Printf("\nchaos results (%s profile)\n%s", profile, table)
		if dir := os.Getenv("CHAOS_REPORT_DIR"); dir != "" {
			writeReports(dir, profile, rs, table)
		}
	}
	os.Exit(code)
}

func renderTable(rs []*result) string {
	var b strings.Builder
	fmt.Fprintln(&b, "| scenario | bound | measured | sent | expected | delivered | lost (detected, undetected) | repaired | lost beyond window | dup | reord | leaked | result |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		c := r.Counts
		res := "PASS"
		if !r.Pass {
			res = "FAIL"
		}
		counts := fmt.Sprintf("%d | %d | %d | %d (%d, %d) | %d | %d | %d | %d | %d", c.Sent, c.Expected, c.Delivered, c.Lost, c.LostDetected, c.LostUndetected, r.Repaired, r.LostBeyondWindow, c.Duplicated, c.Reordered, c.Leaked)
		if len(r.Measures) == 0 {
			r.Measures = []measure{{Name: "-", Bound: "-", Measured: "-", OK: true}}
		}
		for i, m := range r.Measures {
			ok := ""
			if !m.OK {
				ok = " ✗"
			}
			bound := m.Bound
			if strings.IndexAny(bound, "≥≤=<>") != 0 {
				bound = "≤ " + bound // most bounds are maxima; minima and exact values say so
			}
			if i == 0 {
				fmt.Fprintf(&b, "| %s | %s %s | %s%s | %s | %s |\n", r.Scenario, m.Name, bound, m.Measured, ok, counts, res)
			} else {
				fmt.Fprintf(&b, "| | %s %s | %s%s | | | | | | | | | | |\n", m.Name, bound, m.Measured, ok)
			}
		}
	}
	return b.String()
}

func writeReports(dir, profile string, rs []*result, table string) {
	host, _ := os.Hostname()
	machine := fmt.Sprintf("%s, %s/%s, %d CPUs, %s", host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				machine += ", " + strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	date := time.Now().UTC().Format("2006-01-02 15:04 MST")
	os.MkdirAll(dir, 0o755)
	j, _ := json.MarshalIndent(map[string]any{"machine": machine, "date": date, "profile": profile, "results": rs}, "", "  ")
	os.WriteFile(filepath.Join(dir, "chaos.json"), j, 0o644)
	var b strings.Builder
	fmt.Fprintf(&b, "# Chaos suite results\n\nMachine: %s  \nDate: %s  \nProfile: %s (`make chaos`; bounds are the named constants in `integration/chaos/chaos_test.go`)\n\n", machine, date, profile)
	b.WriteString(table)
	b.WriteString("\nlost = expected deliveries that never arrived; detected = the client was disconnected during it (told) or the receiving node counted a gap / the origin counted a drop on that path. repaired = publications the receiving nodes got back by retransmission (each delivered to every subscriber there); lost beyond window = publications the receivers asked for after they had left the origin's window (counted in their gaps).\n\n## Notes\n\n")
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", r.Scenario, n)
		}
	}
	os.WriteFile(filepath.Join(dir, "chaos.md"), []byte(b.String()), 0o644)
}

// nodeCommand runs a script of js/ with node, finding socketcluster-client in
// integration/jsclient/node_modules; the test is skipped when node or the package is missing.
func nodeCommand(t *testing.T, script string, args ...string) *exec.Cmd {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	here := filepath.Dir(file)
	jsdir := filepath.Join(here, "..", "jsclient")
	if _, err := os.Stat(filepath.Join(jsdir, "node_modules", "socketcluster-client")); err != nil {
		t.Skipf("needs socketcluster-client: run `cd integration/jsclient && npm ci` (%v)", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
	cmd := exec.Command("node", append([]string{filepath.Join(here, "js", script)}, args...)...)
	cmd.Env = append(os.Environ(), "JSCLIENT_DIR="+jsdir)
	cmd.Stdin = nil
	_ = io.Discard
	return cmd
}
