package integration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// strictClient parses exactly one JSON object per frame, as the SocketCluster clients of
// other languages do (sacOO7's Python client: json.loads, then dict access, so a JSON array
// raises and its packets are lost; sacOO7's Go client likewise). It answers v2 pings and
// counts every frame that is not one JSON object.
type strictClient struct {
	t      *testing.T
	ws     *websocket.Conn
	cid    int
	arrays int // frames that were JSON arrays: everything in them is lost to such a client
}

func dialStrict(t *testing.T, url string, token string) (*strictClient, map[string]any) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &strictClient{t: t, ws: ws}
	tok := "null"
	if token != "" {
		tok = strconv.Quote(token)
	}
	rid := c.emit("#handshake", `{"authToken":`+tok+`}`)
	return c, c.waitReply(rid)
}

// emit sends an event with a cid and returns the cid.
func (c *strictClient) emit(event, data string) int {
	c.t.Helper()
	c.cid++
	msg := fmt.Sprintf(`{"event":%q,"data":%s,"cid":%d}`, event, data, c.cid)
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.t.Fatal(err)
	}
	return c.cid
}

func (c *strictClient) transmit(event, data string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"event":%q,"data":%s}`, event, data))); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next packet the client can parse (pings answered, arrays counted and lost).
func (c *strictClient) next(within time.Duration) (map[string]any, error) {
	deadline := time.Now().Add(within)
	for {
		_ = c.ws.SetReadDeadline(deadline)
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return nil, err
		}
		if len(b) == 0 {
			_ = c.ws.WriteMessage(websocket.TextMessage, nil)
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			if strings.HasPrefix(string(b), "[") {
				c.arrays++
			}
			continue
		}
		return m, nil
	}
}

func (c *strictClient) waitReply(rid int) map[string]any {
	c.t.Helper()
	for {
		m, err := c.next(5 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for the reply to cid %d: %v (%d array frames lost)", rid, err, c.arrays)
		}
		if r, ok := m["rid"].(float64); ok && int(r) == rid {
			return m
		}
	}
}

func (c *strictClient) waitEvent(event string) map[string]any {
	c.t.Helper()
	for {
		m, err := c.next(5 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v (%d array frames lost)", event, err, c.arrays)
		}
		if m["event"] == event {
			return m
		}
	}
}

// TestStrictClientAgainstCluster runs what sacOO7's Go and Python clients do in their own test
// programs, on a 2-node cluster, with a client that parses one JSON object per frame: a burst
// of 50 publications from the other node, a login emit and its reply, the token set and
// removed, unsubscribe, and a reconnect with the token. Before, the burst arrived as 0 of 50
// (one array frame), the login reply and #setAuthToken were lost the same way.
func TestStrictClientAgainstCluster(t *testing.T) {
	nodes := startCluster(t, 2, "--demo", "--auth-key", "strict-key")
	sub, hs := dialStrict(t, nodes[1].URL(), "")
	if _, ok := hs["data"].(map[string]any)["id"]; !ok {
		t.Fatalf("handshake answer %v", hs)
	}
	if r := sub.waitReply(sub.emit("#subscribe", `{"channel":"strict"}`)); r["error"] != nil {
		t.Fatalf("subscribe: %v", r)
	}
	waitWanted(t, nodes, "n2", 1)

	pub, _ := dialStrict(t, nodes[0].URL(), "")
	for i := range 50 {
		pub.transmit("#publish", fmt.Sprintf(`{"channel":"strict","data":%d}`, i))
	}
	for i := range 50 {
		m := sub.waitEvent("#publish")
		if d := m["data"].(map[string]any)["data"]; d != float64(i) {
			t.Fatalf("publication %d arrived as %v", i, d)
		}
	}

	// Login: the reply, then #setAuthToken, each a packet of its own.
	if r := sub.waitReply(sub.emit("login", `{"username":"alice"}`)); r["error"] != nil {
		t.Fatalf("login reply: %v", r)
	}
	tok, _ := sub.waitEvent("#setAuthToken")["data"].(map[string]any)["token"].(string)
	if tok == "" {
		t.Fatal("#setAuthToken without a token")
	}
	if r := sub.waitReply(sub.emit("whoami", `null`)); !strings.Contains(fmt.Sprint(r["data"]), "alice") {
		t.Fatalf("whoami after login: %v", r)
	}
	if r := sub.waitReply(sub.emit("logout", `null`)); r["error"] != nil {
		t.Fatalf("logout reply: %v", r)
	}
	sub.waitEvent("#removeAuthToken")

	// Unsubscribe: nothing more arrives on the channel.
	if r := sub.waitReply(sub.emit("#unsubscribe", `"strict"`)); r["error"] != nil {
		t.Fatalf("unsubscribe: %v", r)
	}
	harness.Eventually(t, 10*time.Second, "n2's interest gone", func() error {
		v, err := nodes[0].Cluster()
		if err != nil {
			return err
		}
		for _, p := range v.Peers {
			if p.Name == "n2" && p.Channels != 0 {
				return fmt.Errorf("n1 still routes %d channels to n2", p.Channels)
			}
		}
		return nil
	})
	pub.transmit("#publish", `{"channel":"strict","data":"late"}`)
	time.Sleep(300 * time.Millisecond)
	for rid := sub.emit("echo", `"after"`); ; {
		m, err := sub.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m["event"] == "#publish" {
			t.Fatalf("a publication after unsubscribe: %v", m)
		}
		if r, _ := m["rid"].(float64); int(r) == rid {
			break
		}
	}

	// Reconnect with the token (issued before the logout: still valid) on the other node.
	again, hs2 := dialStrict(t, nodes[0].URL(), tok)
	if hs2["data"].(map[string]any)["isAuthenticated"] != true {
		t.Fatalf("reconnect with the token: %v", hs2)
	}
	if sub.arrays+pub.arrays+again.arrays != 0 {
		t.Fatalf("%d array frames: lost to a client that parses one object per frame", sub.arrays+pub.arrays+again.arrays)
	}
}
