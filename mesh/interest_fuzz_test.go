package mesh

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

// FuzzLocalInterest drives the local side of the table with arbitrary adds, removes, expiries
// and flushes of any budget, and checks what a peer applying the deltas would believe: versions
// consecutive, no empty delta, no channel added twice or removed when not announced, the
// heartbeat's digest and count those of the peer's set; and once every removal is due and
// everything is flushed, the peer's set is exactly the channels still wanted.
func FuzzLocalInterest(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add([]byte{0x10, 0x11, 0x40, 0x90, 0x12, 0x50, 0x13, 0xa0, 0xff})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const delay = 500 * time.Millisecond
		tb := NewTable[string](delay, time.Second)
		refs := map[string]int{}
		peer := map[string]bool{}
		var version uint64
		now := time.Unix(0, 0)
		apply := func(ds []Delta) {
			for _, d := range ds {
				if d.Version != version+1 {
					t.Fatalf("delta version %d after %d", d.Version, version)
				}
				if len(d.Added)+len(d.Removed) == 0 {
					t.Fatalf("empty delta %d", d.Version)
				}
				version = d.Version
				for _, ch := range d.Added {
					if peer[ch] {
						t.Fatalf("%s added twice", ch)
					}
					peer[ch] = true
				}
				for _, ch := range d.Removed {
					if !peer[ch] {
						t.Fatalf("%s removed but not announced", ch)
					}
					delete(peer, ch)
				}
			}
			b := tb.LocalBeat()
			if b.Version != version || b.Count != len(peer) || b.Digest != Digest(slices.Collect(maps.Keys(peer))) {
				t.Fatalf("beat %+v, peer at %d with %d channels", b, version, len(peer))
			}
		}
		for _, op := range ops {
			ch := fmt.Sprintf("c%d", op&7)
			switch op >> 4 & 7 {
			case 0, 1:
				tb.AddLocal(ch)
				refs[ch]++
			case 2, 3:
				if refs[ch] > 0 {
					refs[ch]--
				}
				tb.RemoveLocal(ch, now)
			case 4:
				now = now.Add(time.Duration(op&15) * 100 * time.Millisecond)
				tb.Expire(now)
			case 5:
				apply(tb.Flush(int(op&15)*2, int(op&3)))
			default:
				apply(tb.Flush(1<<20, 0))
			}
		}
		now = now.Add(delay)
		tb.Expire(now)
		apply(tb.Flush(1<<20, 0))
		if tb.HasPending() {
			t.Fatal("pending after a full flush")
		}
		for ch, n := range refs {
			if (n > 0) != peer[ch] {
				t.Fatalf("%s: %d local refs, announced %v", ch, n, peer[ch])
			}
		}
	})
}
