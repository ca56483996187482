package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one measured row. Fields that do not apply to a scenario are
// zero (and left out of the JSON).
type Result struct {
	Time     string `json:"time"`
	Label    string `json:"label,omitempty"`
	Scenario string `json:"scenario"`
	Of       string `json:"of,omitempty"`      // max: the scenario ramped
	Step     int    `json:"step,omitempty"`    // max: step number (1…); 0 in the summary
	Summary  bool   `json:"summary,omitempty"` // max: the final row
	URLs     string `json:"urls"`

	Connections  int  `json:"connections"`
	Subscribers  int  `json:"subscribers,omitempty"`
	Publishers   int  `json:"publishers,omitempty"`
	Channels     int  `json:"channels,omitempty"`
	PayloadBytes int  `json:"payload_bytes,omitempty"`
	Ack          bool `json:"ack,omitempty"`

	DurationSec float64 `json:"duration_s"`
	TargetRate  float64 `json:"target_pub_per_s,omitempty"`
	PublishRate float64 `json:"pub_per_s,omitempty"`
	Published   int64   `json:"published,omitempty"`
	Skipped     int64   `json:"skipped,omitempty"`

	Expected        int64   `json:"expected,omitempty"`
	Delivered       int64   `json:"delivered,omitempty"`
	DeliveredPerSec float64 `json:"delivered_per_s,omitempty"`
	Lost            int64   `json:"lost"`
	LossPct         float64 `json:"loss_pct"`
	Gaps            int64   `json:"seq_gaps,omitempty"`
	OutOfOrder      int64   `json:"out_of_order,omitempty"`
	Disconnects     int     `json:"disconnects,omitempty"`

	LatP50Ms  float64 `json:"lat_p50_ms,omitempty"`
	LatP90Ms  float64 `json:"lat_p90_ms,omitempty"`
	LatP99Ms  float64 `json:"lat_p99_ms,omitempty"`
	LatMaxMs  float64 `json:"lat_max_ms,omitempty"`
	LatMeanMs float64 `json:"lat_mean_ms,omitempty"`

	Acked     int64   `json:"acked,omitempty"`
	AckErrors int64   `json:"ack_errors,omitempty"`
	AckP50Ms  float64 `json:"ack_p50_ms,omitempty"`
	AckP99Ms  float64 `json:"ack_p99_ms,omitempty"`
	AckMaxMs  float64 `json:"ack_max_ms,omitempty"`

	ConnectsPerSec float64 `json:"connects_per_s,omitempty"`
	ConnectErrors  int     `json:"connect_errors,omitempty"`
	Concurrency    int     `json:"concurrency,omitempty"`
	Connector      string  `json:"connector,omitempty"` // connect: raw or gorilla

	ServerCPU          float64 `json:"server_cpu_pct,omitempty"`
	ServerRSSMiB       float64 `json:"server_rss_mib,omitempty"`
	ServerRSSBeforeMiB float64 `json:"server_rss_before_mib,omitempty"`
	MemPerConnKiB      float64 `json:"mem_per_conn_kib,omitempty"`
	ToolCPU            float64 `json:"tool_cpu_pct"`
	ToolCPUs           int     `json:"tool_cpus"`
	ToolLimited        bool    `json:"tool_limited,omitempty"`

	// hold: the open phase (DurationSec is the hold), disconnects during the
	// hold (also counted in Disconnects, with those between a connection's
	// subscription and the end of the open phase), pings answered, and the
	// publication to every connection: deliveries (Expected and Delivered
	// count the same, the latency columns are theirs), connections that got it,
	// the time from its send until the first and the last delivery, and the
	// server's and the tool's CPU from just before the publication until the
	// last delivery. The counts are pointers so that a 0 is written.
	OpenSec           float64 `json:"open_s,omitempty"`
	NotAttempted      int     `json:"not_attempted,omitempty"` // hold: connections never tried (the server stopped taking them)
	HoldDisconnects   *int    `json:"hold_disconnects,omitempty"`
	PingsAnswered     int64   `json:"pings_answered,omitempty"`
	FanoutDelivered   *int64  `json:"fanout_delivered,omitempty"`
	FanoutReceivers   int     `json:"fanout_receivers,omitempty"`
	FanoutFirstMs     float64 `json:"fanout_first_ms,omitempty"`
	FanoutAllMs       float64 `json:"fanout_all_ms,omitempty"`
	FanoutServerCPUMs float64 `json:"fanout_server_cpu_ms,omitempty"`
	FanoutToolCPUMs   float64 `json:"fanout_tool_cpu_ms,omitempty"`
	ServerRSSEndMiB   float64 `json:"server_rss_end_mib,omitempty"` // hold: at the end of the hold (ServerRSSMiB: once all were subscribed)

	MaxDeliveredPerSec float64 `json:"max_delivered_per_s,omitempty"`
	StopReason         string  `json:"stop_reason,omitempty"`

	Warnings []string `json:"warnings,omitempty"`
}

// fill copies the descriptive fields of base into r.
func (r *Result) fill(base Result) {
	r.Scenario, r.Of, r.URLs = base.Scenario, base.Of, base.URLs
	r.Connections, r.Subscribers, r.Publishers, r.Channels = base.Connections, base.Subscribers, base.Publishers, base.Channels
	r.PayloadBytes, r.Ack = base.PayloadBytes, base.Ack
}

// failure says why a max step does not count as sustained ("" when it does): loss, p99
// latency over maxP99, subscribers disconnected, or publishers held under 90 % of the rate.
func (r *Result) failure(maxP99 time.Duration) string {
	switch {
	case r.Lost > 0:
		return fmt.Sprintf("loss at step %d (%d lost)", r.Step, r.Lost)
	case r.LatP99Ms > float64(maxP99)/1e6:
		return fmt.Sprintf("p99 %.1f ms > %v at step %d", r.LatP99Ms, maxP99, r.Step)
	case r.Disconnects > 0:
		return fmt.Sprintf("%d subscribers disconnected at step %d", r.Disconnects, r.Step)
	case r.PublishRate < 0.9*r.TargetRate:
		return fmt.Sprintf("publishers reached only %.0f of %.0f publications/s at step %d", r.PublishRate, r.TargetRate, r.Step)
	}
	return ""
}

func (r *Result) setLatency(s *Snapshot) {
	r.LatP50Ms = ms(s.Quantile(0.50))
	r.LatP90Ms = ms(s.Quantile(0.90))
	r.LatP99Ms = ms(s.Quantile(0.99))
	r.LatMaxMs = ms(time.Duration(s.Max))
	r.LatMeanMs = ms(s.Mean())
}

// WriteJSON writes r as one JSON line.
func WriteJSON(w io.Writer, r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteTable writes results as a human-readable table, then their warnings.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconns\tpub/s\tdelivered/s\tloss\tp50 ms\tp90 ms\tp99 ms\tmax ms\tack p99\tconn/s\tKiB/conn\tsrv CPU\tsrv RSS\ttool CPU\t")
	for _, r := range results {
		name := r.Scenario
		switch {
		case r.Summary:
			name = "max(" + r.Of + ") best"
		case r.Step > 0 && r.Scenario == "max":
			name = fmt.Sprintf("max(%s) #%d", r.Of, r.Step)
		}
		if r.Label != "" {
			name = r.Label + " " + name
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			name, r.Connections, num(r.PublishRate), num(r.DeliveredPerSec), loss(r),
			dec(r.LatP50Ms), dec(r.LatP90Ms), dec(r.LatP99Ms), dec(r.LatMaxMs), dec(r.AckP99Ms),
			num(r.ConnectsPerSec), dec(r.MemPerConnKiB), pct(r.ServerCPU), mib(r.ServerRSSMiB), pct(r.ToolCPU))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if r.Summary && r.StopReason != "" {
			fmt.Fprintf(w, "max(%s): highest sustained %s delivered/s; stopped: %s\n", r.Of, num(r.MaxDeliveredPerSec), r.StopReason)
		}
		if r.Scenario == "hold" {
			writeHold(w, r)
		}
		for _, m := range r.Warnings {
			fmt.Fprintf(w, "WARNING (%s): %s\n", r.Scenario, m)
		}
	}
	return nil
}

// writeHold writes the hold scenario's own numbers under the table.
func writeHold(w io.Writer, r Result) {
	deref := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	fmt.Fprintf(w, "hold: %d connections on %d channel(s), opened and subscribed in %.1fs (%s/s, %d failed), held %.0fs: %d disconnects during the hold (%d in all), %d pings answered\n",
		r.Connections, r.Channels, r.OpenSec, num(r.ConnectsPerSec), r.ConnectErrors, r.DurationSec, deref(r.HoldDisconnects), r.Disconnects, r.PingsAnswered)
	if r.MemPerConnKiB != 0 {
		fmt.Fprintf(w, "hold: server RSS %.0f MiB before, %.0f MiB subscribed (%.2f KiB per connection), %.0f MiB at the end\n",
			r.ServerRSSBeforeMiB, r.ServerRSSMiB, r.MemPerConnKiB, r.ServerRSSEndMiB)
	}
	if r.FanoutDelivered == nil {
		fmt.Fprintln(w, "hold: publish to all: not measured")
		return
	}
	srv := "server CPU unknown (no --server-pid)"
	if r.FanoutServerCPUMs > 0 {
		srv = fmt.Sprintf("server CPU %.1f ms", r.FanoutServerCPUMs)
	}
	fmt.Fprintf(w, "hold: publish to all: %d of %d delivered (%d connections), first after %.2f ms, all after %.1f ms; %s, tool CPU %.1f ms\n",
		*r.FanoutDelivered, r.Expected, r.FanoutReceivers, r.FanoutFirstMs, r.FanoutAllMs, srv, r.FanoutToolCPUMs)
}

func loss(r Result) string {
	if r.Expected == 0 {
		return "-"
	}
	if r.Lost == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%.2g%%)", r.Lost, r.LossPct)
}

// num formats a rate compactly: 950, 12.3k, 1.05M.
func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func dec(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func pct(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", v)
}

func mib(v float64) string {
	if v == 0 {
		return "-"
	}
	return strings.TrimSpace(fmt.Sprintf("%.0f MiB", v))
}
