package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// drainStatus mirrors node.DrainStatus (GET/POST /drain on the admin address).
type drainStatus struct {
	Draining bool   `json:"draining"`
	Phase    string `json:"phase"`
	Clients  int    `json:"clients"`
	Channels int    `json:"channels_pending"`
}

// runDrain asks a node to drain (POST /drain on its admin address): readyz fails at once,
// clients are moved to the other nodes, then the node leaves the cluster and its process
// exits 0. With --wait (the default) it follows the drain until the node has stopped.
func runDrain(args []string) error {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	admin := fs.String("admin", "http://127.0.0.1:8001", "the node's admin base URL")
	wait := fs.Bool("wait", true, "follow the drain until the node has stopped")
	timeout := fs.Duration("timeout", 60*time.Second, "give up waiting after this long (exit 1)")
	token := fs.String("admin-token", "", "the node's --admin-token (env SOCKMESH_ADMIN_TOKEN)")
	apiKey := fs.String("api-key", "", "the cluster's --api-key, instead of the admin token (env SOCKMESH_API_KEY)")
	quiet := fs.Bool("quiet", false, "print nothing but errors")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	base := strings.TrimRight(*admin, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	say := func(format string, a ...any) {
		if !*quiet {
			fmt.Fprintf(os.Stderr, format+"\n", a...)
		}
	}
	hc := adminClient(*token, *apiKey)
	resp, err := hc.Post(base+"/drain", "", nil)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST %s/drain: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var st drainStatus
	_ = json.Unmarshal(body, &st)
	say("draining %s: %d clients", base, st.Clients)
	if !*wait {
		return nil
	}
	deadline := time.Now().Add(*timeout)
	last := ""
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		st, err := getDrain(hc, base)
		var refused *httpStatusError
		if errors.As(err, &refused) {
			return err
		}
		if err != nil {
			// The admin listener closes as the node stops: the drain is over.
			say("drained: %s has stopped", base)
			return nil
		}
		line := fmt.Sprintf("%s: %d clients, %d channels not yet wanted elsewhere", st.Phase, st.Clients, st.Channels)
		if line != last {
			say("  %s", line)
			last = line
		}
		if st.Phase == "stopped" {
			say("drained: %s has stopped", base)
			return nil
		}
	}
	return errors.New("drain: still running after --timeout")
}

func getDrain(hc *http.Client, base string) (drainStatus, error) {
	var st drainStatus
	resp, err := hc.Get(base + "/drain")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, &httpStatusError{"GET /drain: " + resp.Status}
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// httpStatusError: the node answered, with an error status (not: it has stopped).
type httpStatusError struct{ msg string }

func (e *httpStatusError) Error() string { return e.msg }
