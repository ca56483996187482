package mesh

import (
	"context"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lineCounter is a slog handler that counts records at info level or above (what a node logs
// by default) whose message or attributes mention any of its words.
type lineCounter struct {
	words []string
	n     *atomic.Int64
	mu    *sync.Mutex
	lines *[]string
}

func (h lineCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h lineCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	s := b.String()
	for _, w := range h.words {
		if strings.Contains(s, w) {
			h.n.Add(1)
			h.mu.Lock()
			*h.lines = append(*h.lines, s)
			h.mu.Unlock()
			return nil
		}
	}
	return nil
}
func (h lineCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h lineCounter) WithGroup(string) slog.Handler      { return h }

// TestGossipGarbageIsCountedNotLogged: 10,000 random datagrams and 200 TCP connections of
// garbage (some announcing 4 GiB of encrypted state) on the gossip port of an open and of a
// keyed node. The node stays a member, every piece of garbage is counted, and the log gets a
// few lines, not one per datagram.
func TestGossipGarbageIsCountedNotLogged(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		name := "open"
		if keyed {
			name = "keyed"
		}
		t.Run(name, func(t *testing.T) {
			var n atomic.Int64
			var mu sync.Mutex
			var lines []string
			logger := slog.New(lineCounter{words: []string{"memberlist", "gossip port"}, n: &n, mu: &mu, lines: &lines})
			mod := func(c *Config) {
				c.Logger = logger
				if keyed {
					c.ClusterKey = testKeyA
				}
			}
			n1 := startMesh(t, "n1", nil, mod)
			n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, mod)
			waitFor(t, 5*time.Second, "linked", func() bool { return n1.Ready() && n2.Ready() })
			before := n.Load()

			rng := rand.New(rand.NewPCG(3, 4))
			udp, err := net.Dial("udp", n1.GossipEndpoint())
			if err != nil {
				t.Fatal(err)
			}
			defer udp.Close()
			buf := make([]byte, 1400)
			for i := range 10_000 {
				k := 1 + rng.IntN(len(buf))
				for j := range k {
					buf[j] = byte(rng.Uint32())
				}
				if i%10 == 0 {
					buf[0] = 9 // encryptMsg
				}
				_, _ = udp.Write(buf[:k])
				if i%50 == 0 {
					time.Sleep(time.Millisecond) // mostly under the socket buffer
				}
			}
			for i := range 200 {
				c, err := net.DialTimeout("tcp", n1.GossipEndpoint(), time.Second)
				if err != nil {
					t.Fatal(err)
				}
				var b []byte
				switch i % 3 {
				case 0: // an encrypted push/pull announcing 4 GiB
					b = binary.BigEndian.AppendUint32([]byte{9}, ^uint32(0))
				case 1: // a message type, then garbage
					b = append([]byte{byte(rng.IntN(16))}, make([]byte, 64)...)
				default:
					b = make([]byte, 256)
					for j := range b {
						b[j] = byte(rng.Uint32())
					}
				}
				_, _ = c.Write(b)
				c.Close()
			}
			kinds := []string{"decode", "decrypt", "stream", "label", "flood"}
			total := func() (sum float64) {
				for _, k := range kinds {
					sum += counterValue(t, n1.met.gossipErrs, k)
				}
				return sum
			}
			// Most datagrams are refused with a line; some random ones are valid enough to be
			// ignored silently, and the kernel drops some when the node falls behind.
			waitFor(t, 5*time.Second, "garbage counted", func() bool { return total() >= 2000 })
			time.Sleep(500 * time.Millisecond) // what memberlist is still reading
			logged := n.Load() - before
			mu.Lock()
			sample := lines[len(lines)-min(len(lines), 5):]
			mu.Unlock()
			if logged > 10 {
				t.Fatalf("%d log lines about gossip garbage; last: %q", logged, sample)
			}
			// Still a member on both sides, links up.
			waitFor(t, 5*time.Second, "still linked", func() bool { return n1.Ready() && n2.Ready() && len(n2.Status().Members) == 2 })
			t.Logf("%d log lines; %v counted", logged, total())
		})
	}
}
