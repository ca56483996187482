package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// With --log-format json every line the node prints is one JSON object with time, level and
// msg, and the lines about a client connection carry its socket id (conn) and address
// (remote): here the connection's open and close lines (debug level).
func TestJSONLogsCarryConnectionID(t *testing.T) {
	n := harness.NewNode(t, "logs", "--log-format", "json")
	n.Start()
	c := dial(t, n.URL())
	id := c.ID()
	if id == "" {
		t.Fatal("client has no socket id")
	}
	c.Close()

	var lines []map[string]any
	harness.Eventually(t, 5*time.Second, "connection closed logged", func() error {
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSpace(n.Log()), "\n") {
			if !strings.HasPrefix(l, "{") {
				// The start banner goes to stdout (merged here) as plain text; a text-format
				// log line would be caught by its level= key.
				if strings.Contains(l, "level=") {
					t.Fatalf("text log line with --log-format json: %s", l)
				}
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line is not JSON: %v\n%s", err, l)
			}
			for _, k := range []string{"time", "level", "msg"} {
				if _, ok := m[k]; !ok {
					t.Fatalf("log line without %q: %s", k, l)
				}
			}
			lines = append(lines, m)
		}
		for _, m := range lines {
			if m["msg"] == "connection closed" && m["conn"] == id {
				return nil
			}
		}
		return fmt.Errorf("no 'connection closed' line for conn %s", id)
	})
	seen := map[string]bool{}
	for _, m := range lines {
		if m["conn"] != id {
			continue
		}
		if r, _ := m["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
			t.Errorf("line about conn %s has remote %v", id, m["remote"])
		}
		seen[m["msg"].(string)] = true
	}
	for _, msg := range []string{"connection opened", "connection closed"} {
		if !seen[msg] {
			t.Errorf("no %q line with conn=%s", msg, id)
		}
	}
}
