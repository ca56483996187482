package bench

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBucketsCoverValuesWithinThreePercent(t *testing.T) {
	prevLo := int64(-1)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo <= prevLo || hi < lo {
			t.Fatalf("bucket %d: range [%d,%d] after lo %d", i, lo, hi, prevLo)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf(lo)=%d bucketOf(hi)=%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo > 0 && float64(hi-lo)/float64(lo) > 1.0/subCount {
			t.Fatalf("bucket %d [%d,%d] wider than 1/%d", i, lo, hi, subCount)
		}
		prevLo = lo
	}
	for _, v := range []int64{-5, 0, 1, 63, 64, 65, 1000, 123456789, 1 << 39, 1 << 40, 1 << 62} {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, i)
		}
		lo, hi := bucketRange(i)
		if v >= 0 && v < 1<<maxExp && (v < lo || v > hi) {
			t.Fatalf("%d not in its bucket [%d,%d]", v, lo, hi)
		}
	}
	if bucketOf(1<<62) != numBuckets-1 || bucketOf(-1) != 0 {
		t.Fatal("out-of-range values are not clamped")
	}
}

func TestQuantilesMatchExactWithinBucketError(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100000)
	for i := range vals {
		// log-uniform from 1 µs to 1 s
		vals[i] = int64(1e3 * math.Pow(10, rng.Float64()*6))
		h.Record(vals[i])
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	var s Snapshot
	h.AddTo(&s)
	if s.N != uint64(len(vals)) || s.Max != vals[len(vals)-1] {
		t.Fatalf("count %d max %d, want %d %d", s.N, s.Max, len(vals), vals[len(vals)-1])
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[int(q*float64(len(vals)-1))]
		got := int64(s.Quantile(q))
		if d := float64(got-exact) / float64(exact); d > 0.04 || d < -0.04 {
			t.Errorf("q%.3f: %d, exact %d (%.1f%% off)", q, got, exact, 100*d)
		}
	}
	var mean int64
	for _, v := range vals {
		mean += v / int64(len(vals))
	}
	if d := float64(s.Mean()) - float64(mean); d > 0.01*float64(mean) || d < -0.01*float64(mean) {
		t.Errorf("mean %v, want about %v", s.Mean(), time.Duration(mean))
	}
}

func TestHistogramEmptyResetAndSharded(t *testing.T) {
	var s Snapshot
	if s.Quantile(0.5) != 0 || s.Mean() != 0 {
		t.Fatal("empty snapshot should give zeros")
	}
	var sh shardedHist
	for i := 0; i < 80; i++ {
		sh.shard(i).Record(int64(i+1) * 1000)
	}
	if sh.count() != 80 {
		t.Fatalf("count %d", sh.count())
	}
	snap := sh.snapshot()
	if snap.Max != 80000 || snap.Quantile(0) > 1000 {
		t.Fatalf("max %d min-ish %v", snap.Max, snap.Quantile(0))
	}
	sh.reset()
	if sh.count() != 0 || sh.snapshot().Max != 0 {
		t.Fatal("reset left values")
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(1000, func() { h.Record(12345) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	for i := 0; i < b.N; i++ {
		h.Record(int64(i & 0xfffff))
	}
}
