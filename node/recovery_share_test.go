package node

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFetchShares(t *testing.T) {
	rg, other := &ring{}, &ring{}
	pos := Position{Seqs: map[string]uint64{"a": 5, "b": 7}, Time: 1}
	answer := func(n int, complete bool) func() ([]fetchedPub, bool, string) {
		return func() ([]fetchedPub, bool, string) {
			pubs := make([]fetchedPub, n)
			for i := range pubs {
				pubs[i] = fetchedPub{origin: "a", seq: uint64(6 + i), data: []byte(strings.Repeat("x", 100))}
			}
			if !complete {
				return pubs, false, "refused"
			}
			return pubs, true, ""
		}
	}

	t.Run("under way: one fetch for all", func(t *testing.T) {
		fs := newFetchShares(1<<20, time.Minute)
		var fetches atomic.Int32
		release := make(chan struct{})
		slow := func() ([]fetchedPub, bool, string) {
			fetches.Add(1)
			<-release
			return answer(3, true)()
		}
		var wg sync.WaitGroup
		var shared atomic.Int32
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pubs, ok, _, sh := fs.do("c", pos, rg, 10, slow)
				if !ok || len(pubs) != 3 {
					t.Errorf("got %d, complete %v", len(pubs), ok)
				}
				if sh {
					shared.Add(1)
				}
			}()
		}
		time.Sleep(50 * time.Millisecond)
		close(release)
		wg.Wait()
		if fetches.Load() != 1 || shared.Load() != 49 {
			t.Fatalf("%d fetches, %d shared; want 1 and 49", fetches.Load(), shared.Load())
		}
	})

	t.Run("kept: same ring, same period, same position (origins in any order)", func(t *testing.T) {
		fs := newFetchShares(1<<20, time.Minute)
		fs.do("c", pos, rg, 10, answer(3, true))
		same := Position{Seqs: map[string]uint64{"b": 7, "a": 5}, Time: 1}
		if _, _, _, sh := fs.do("c", same, rg, 10, answer(0, true)); !sh {
			t.Fatal("a kept complete answer was not shared")
		}
		for what, try := range map[string]func() bool{
			"another position": func() bool {
				_, _, _, sh := fs.do("c", Position{Seqs: map[string]uint64{"a": 6, "b": 7}, Time: 1}, rg, 10, answer(0, true))
				return sh
			},
			"another channel":      func() bool { _, _, _, sh := fs.do("d", pos, rg, 10, answer(0, true)); return sh },
			"another ring":         func() bool { _, _, _, sh := fs.do("c", pos, other, 10, answer(0, true)); return sh },
			"a break in receiving": func() bool { _, _, _, sh := fs.do("c", pos, rg, 11, answer(0, true)); return sh },
		} {
			if try() {
				t.Errorf("%s: shared", what)
			}
		}
	})

	t.Run("incomplete answers are asked again", func(t *testing.T) {
		fs := newFetchShares(1<<20, time.Minute)
		fs.do("c", pos, rg, 10, answer(3, false))
		if _, ok, _, sh := fs.do("c", pos, rg, 10, answer(3, true)); sh || !ok {
			t.Fatalf("shared %v, complete %v: an incomplete answer was kept", sh, ok)
		}
	})

	t.Run("age and bytes", func(t *testing.T) {
		fs := newFetchShares(1<<20, 20*time.Millisecond)
		fs.do("c", pos, rg, 10, answer(3, true))
		time.Sleep(30 * time.Millisecond)
		if _, _, _, sh := fs.do("c", pos, rg, 10, answer(3, true)); sh {
			t.Fatal("an answer past its age was shared")
		}
		small := newFetchShares(20_000, time.Minute) // each answer of 100 publications: ~18 KB
		for ch := range 10 {
			small.do(string(rune('a'+ch)), pos, rg, 10, answer(100, true))
			if small.bytes > small.max {
				t.Fatalf("%d bytes kept, bound %d", small.bytes, small.max)
			}
		}
		if len(small.m) != 1 {
			t.Fatalf("%d answers kept; want the last one", len(small.m))
		}
		none := newFetchShares(0, time.Minute)
		none.do("c", pos, rg, 10, answer(1, true))
		if len(none.m) != 0 || none.bytes != 0 {
			t.Fatalf("bound 0 kept %d answers, %d bytes", len(none.m), none.bytes)
		}
	})
}

// TestShareKeyUnambiguous: positions that differ never share a key, however their names are
// made (a client chooses its position's origin names).
func TestShareKeyUnambiguous(t *testing.T) {
	pairs := [][2]Position{
		{{Seqs: map[string]uint64{"a,1:b": 2}}, {Seqs: map[string]uint64{"a": 1, "b": 2}}},
		{{Seqs: map[string]uint64{"a1": 2}}, {Seqs: map[string]uint64{"a": 12}}},
		{{Seqs: map[string]uint64{"a": 1}, Time: 12}, {Seqs: map[string]uint64{"2a": 1}, Time: 1}},
	}
	for _, p := range pairs {
		if a, b := shareKey("c", p[0]), shareKey("c", p[1]); a == b {
			t.Errorf("%+v and %+v share the key %q", p[0], p[1], a)
		}
	}
	if shareKey("c1", Position{Time: 2}) == shareKey("c", Position{Time: 12}) {
		t.Error("channel and time run together")
	}
}
