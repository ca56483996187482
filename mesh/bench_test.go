package mesh

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks (numbers for the docs, not assertions). Run:
//
//	go test -run '^$' -bench . -benchtime 2s ./mesh/

type countingNode struct {
	*testNode
	n atomic.Int64
}

func benchPair(b *testing.B, mod ...func(*Config)) (*testNode, *testNode, *atomic.Int64) {
	b.Helper()
	var got atomic.Int64
	big := func(c *Config) {
		c.PeerQueue = 1 << 20
		c.PeerQueueBytes = 1 << 30
	}
	count := func(c *Config) {
		c.Deliver = func(string, []byte, []byte) { got.Add(1) }
	}
	mod = append(mod, big)
	n1 := startMesh(b, "n1", nil, mod...)
	n2 := startMesh(b, "n2", []string{n1.GossipEndpoint()}, append([]func(*Config){count}, mod...)...)
	waitFor(b, 10*time.Second, "pair ready", func() bool {
		return n1.Ready() && n2.Ready() && len(n1.Status().Peers) == 1
	})
	return n1, n2, &got
}

// throughput publishes b.N publications from n1, keeping at most window in flight (n1 → n2),
// and waits until n2 has them all.
func throughput(b *testing.B, n1 *testNode, got *atomic.Int64, channels []string, size int) {
	payload := make([]byte, size)
	const window = 20_000
	base := got.Load()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for int64(i)-(got.Load()-base) > window {
			time.Sleep(50 * time.Microsecond) // spinning would steal one of the two cores
		}
		n1.Publish(channels[i%len(channels)], payload)
	}
	for got.Load()-base < int64(b.N) {
		if time.Since(start) > 20*time.Second {
			b.Fatalf("only %d of %d delivered; n1→n2 %+v", got.Load()-base, b.N, peerStatus(n1.Mesh, "n2"))
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pubs/s")
	if ps := peerStatus(n1.Mesh, "n2"); ps.Dropped != 0 {
		b.Fatalf("dropped %d", ps.Dropped)
	}
}

// BenchmarkLinkThroughput: publications per second through one link (n1 → n2), delivered.
// key=on: a closed mesh (Config.ClusterKey), every envelope sealed and opened (AES-256-GCM).
func BenchmarkLinkThroughput(b *testing.B) {
	for _, key := range []bool{false, true} {
		for _, size := range []int{100, 1024} {
			name := fmt.Sprintf("%dB", size)
			if key {
				name += "/key=on"
			} else {
				name += "/key=off"
			}
			b.Run(name, func(b *testing.B) {
				var mod []func(*Config)
				if key {
					mod = append(mod, func(c *Config) { c.ClusterKey = []byte("bench-cluster-key-32-bytes-xxxxx") })
				}
				n1, n2, got := benchPair(b, mod...)
				n2.AddInterest("bench")
				waitInterest(b, []*testNode{n1}, "n2", "bench", true)
				throughput(b, n1, got, []string{"bench"}, size)
			})
		}
	}
}

// BenchmarkPublishWantedChannels: the publish path with 10 vs 10,000 channels wanted by the
// peer. zmq4's PUB filter would scan every subscribed prefix per message; with mailbox topics
// the scan is two entries and routing is one map lookup, so the cost must stay flat.
func BenchmarkPublishWantedChannels(b *testing.B) {
	for _, k := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("channels=%d", k), func(b *testing.B) {
			n1, n2, got := benchPair(b)
			chans := make([]string, k)
			for i := range chans {
				chans[i] = fmt.Sprintf("ch-%d", i)
				n2.AddInterest(chans[i])
			}
			waitFor(b, 20*time.Second, "all channels wanted", func() bool {
				n, _ := n1.table.PeerCount(n1.peerByName("n2"))
				return n == k
			})
			throughput(b, n1, got, chans, 100)
		})
	}
}

// BenchmarkPublishCall: the cost of one Publish call alone (route lookup + enqueue), with a
// peer wanting 10 vs 10,000 channels. No sockets: the peer's queue is drained in the loop.
func BenchmarkPublishCall(b *testing.B) {
	for _, k := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("channels=%d", k), func(b *testing.B) {
			m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0"})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			p := m.newPeer(memberInfo{serfName: "x-1", logical: "x", inc: "1"})
			chans := make([]string, k)
			for i := range chans {
				chans[i] = fmt.Sprintf("ch-%d", i)
			}
			m.table.AddPeer(p)
			m.table.PeerSnapshot(p, Snapshot{Version: 1, Channels: chans})
			payload := make([]byte, 100)
			var buf []publication
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.Publish(chans[i%k], payload)
				if i%256 == 255 {
					for more := true; more; {
						buf, _, more = p.take(buf, 0)
					}
					m.readyMu.Lock()
					m.readyQ = m.readyQ[:0]
					m.readyMu.Unlock()
				}
			}
		})
	}
}

// BenchmarkInterestLive: time from AddInterest on one node until the peers route the channel
// to it (2 peers), and until a publication on it arrives.
func BenchmarkInterestLive(b *testing.B) {
	nodes := startCluster(b, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		ch := fmt.Sprintf("live-%d", i)
		start := time.Now()
		n3.AddInterest(ch)
		for !peerWants(n1.Mesh, "n3", ch) || !peerWants(n2.Mesh, "n3", ch) {
			time.Sleep(20 * time.Microsecond)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/live")
}

// peerByName returns the peer with logical name name (tests and benchmarks).
func (m *Mesh) peerByName(name string) *peer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, p := range m.peers {
		if p.logical == name {
			return p
		}
	}
	return nil
}

// BenchmarkHopLatency: one-way latency a mesh hop adds (Publish on n1 → Deliver on n2), at a
// paced rate; reports p50 and p99. b.N is the number of publications.
func BenchmarkHopLatency(b *testing.B) {
	for _, rate := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			var lat []time.Duration
			var mu sync.Mutex
			rec := func(c *Config) {
				c.Deliver = func(_ string, data, _ []byte) {
					sent := int64(binary.BigEndian.Uint64(data))
					d := time.Duration(time.Now().UnixNano() - sent)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}
			n1 := startMesh(b, "n1", nil)
			n2 := startMesh(b, "n2", []string{n1.GossipEndpoint()}, rec)
			waitFor(b, 10*time.Second, "pair ready", func() bool { return n1.Ready() && n2.Ready() && len(n1.Status().Peers) == 1 })
			n2.AddInterest("lat")
			waitInterest(b, []*testNode{n1}, "n2", "lat", true)
			interval := time.Second / time.Duration(rate)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				payload := make([]byte, 100)
				binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
				n1.Publish("lat", payload)
			}
			waitFor(b, 20*time.Second, "all delivered", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(lat) == b.N
			})
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkLinkThroughputRetain: publications per second through one link with the
// retransmission window at its default (64 MiB, 30 s) and switched off (RetainBytes < 0): what
// keeping every numbered publication for repair costs the healthy path.
func BenchmarkLinkThroughputRetain(b *testing.B) {
	for _, retain := range []int{0, -1} {
		for _, size := range []int{100, 1024} {
			name := fmt.Sprintf("%dB/retain=on", size)
			if retain < 0 {
				name = fmt.Sprintf("%dB/retain=off", size)
			}
			b.Run(name, func(b *testing.B) {
				n1, n2, got := benchPair(b, func(c *Config) { c.RetainBytes = retain })
				n2.AddInterest("bench")
				waitInterest(b, []*testNode{n1}, "n2", "bench", true)
				throughput(b, n1, got, []string{"bench"}, size)
			})
		}
	}
}

// BenchmarkTxWindow: numbering one publication of 100 bytes into a full window (copy, append
// and trim at the byte bound), and the heap one retained publication holds (measured over a
// window of 100,000 entries: payload, channel and metadata).
func BenchmarkTxWindow(b *testing.B) {
	payload := make([]byte, 100)
	pb := publication{"bench", payload, nil}
	b.Run("add", func(b *testing.B) {
		w := newTxWindow(64<<20, 30*time.Second)
		now := time.Now().UnixNano()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			w.add(uint64(i)+1, &pb, now)
		}
	})
	b.Run("heap-per-entry", func(b *testing.B) {
		const n = 100_000
		var perEntry float64
		for i := 0; i < b.N; i++ {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			w := newTxWindow(1<<40, time.Hour)
			for s := uint64(1); s <= n; s++ {
				w.add(s, &pb, 1)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			perEntry = float64(after.HeapAlloc-before.HeapAlloc) / n
			runtime.KeepAlive(&w)
		}
		b.ReportMetric(perEntry, "B/entry")
	})
}

// BenchmarkExpireManyChannels: the heartbeat's interest upkeep (Table.Expire) with 1,000,000
// local channels of which 10 are waiting for their removal: it looks at the waiting ones, not
// at every channel (it scanned them all, under the mesh lock: 59 ms per heartbeat).
func BenchmarkExpireManyChannels(b *testing.B) {
	tb := NewTable[int](2*time.Second, time.Second)
	for i := range 1_000_000 {
		tb.AddLocal("ch-" + strconv.Itoa(i))
	}
	tb.Flush(0, 0)
	now := time.Unix(1000, 0)
	for i := range 10 {
		tb.RemoveLocal("ch-"+strconv.Itoa(i), now)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tb.Expire(now.Add(time.Second)) // not due yet: the common heartbeat
	}
}
