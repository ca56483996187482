package bench

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latency histogram: a fixed array of log-spaced buckets in the style of
// HdrHistogram. Values are nanoseconds. Below 64 ns every value has its own
// bucket; above, each power of two is split into 32 linear sub-buckets, so a
// recorded value is known within 1/32 (about 3%). Values of 2^40 ns (about
// 18 minutes) and more share the last bucket. Recording is one atomic add on
// a preallocated array: no allocation, safe from many goroutines.
const (
	subBits    = 5
	subCount   = 1 << subBits // sub-buckets per power of two
	maxExp     = 40           // values >= 2^maxExp are clamped
	numBuckets = (maxExp-subBits)*subCount + subCount
)

// bucketOf returns the bucket index of v (ns, clamped to [0, 2^maxExp)).
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u >= 1<<maxExp {
		u = 1<<maxExp - 1
	}
	if u < 2*subCount {
		return int(u)
	}
	e := bits.Len64(u) - (subBits + 1) // u>>e is in [subCount, 2*subCount)
	return e*subCount + int(u>>e)
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	e := i/subCount - 1
	m := int64(i%subCount + subCount)
	return m << e, (m+1)<<e - 1
}

// Histogram records latencies concurrently. The zero value is ready to use.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
}

// Record adds one value in nanoseconds.
func (h *Histogram) Record(ns int64) {
	h.counts[bucketOf(ns)].Add(1)
	h.n.Add(1)
	h.sum.Add(ns)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// Reset clears h. Records racing with Reset may be lost or kept.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.n.Store(0)
	h.sum.Store(0)
	h.max.Store(0)
}

// Count is the number of values recorded since the last Reset.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// AddTo adds h's counts to s.
func (h *Histogram) AddTo(s *Snapshot) {
	for i := range h.counts {
		s.Counts[i] += h.counts[i].Load()
	}
	s.N += h.n.Load()
	s.Sum += h.sum.Load()
	if m := h.max.Load(); m > s.Max {
		s.Max = m
	}
}

// Snapshot is a point-in-time copy of one or more histograms.
type Snapshot struct {
	Counts [numBuckets]uint64
	N      uint64
	Sum    int64
	Max    int64
}

// Quantile returns the value at quantile q (0..1): the middle of the bucket
// holding it, capped by the recorded maximum. 0 when empty.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.N == 0 {
		return 0
	}
	if q < 0 {
		q = 0
	}
	if q > 1 {
		q = 1
	}
	rank := uint64(q*float64(s.N) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > s.N {
		rank = s.N
	}
	var seen uint64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			if v > s.Max {
				v = s.Max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(s.Max)
}

// Mean is the average recorded value.
func (s *Snapshot) Mean() time.Duration {
	if s.N == 0 {
		return 0
	}
	return time.Duration(s.Sum / int64(s.N))
}

// shardedHist spreads concurrent recorders over several histograms so that
// readers on different cores rarely touch the same cache lines.
type shardedHist struct {
	shards [8]Histogram
}

func (sh *shardedHist) shard(i int) *Histogram { return &sh.shards[i&7] }

func (sh *shardedHist) reset() {
	for i := range sh.shards {
		sh.shards[i].Reset()
	}
}

func (sh *shardedHist) count() uint64 {
	var n uint64
	for i := range sh.shards {
		n += sh.shards[i].Count()
	}
	return n
}

func (sh *shardedHist) snapshot() *Snapshot {
	s := new(Snapshot)
	for i := range sh.shards {
		sh.shards[i].AddTo(s)
	}
	return s
}
