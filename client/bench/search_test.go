package bench

import (
	"math"
	"testing"
)

// trace runs searchMax against a server whose limit is limit publications/s (a step passes
// at or under it) and returns the rates tried and the best one that passed.
func trace(start, factor float64, maxSteps, refine int, limit float64, endAt int) (tried []float64, refined int, best float64) {
	searchMax(start, factor, maxSteps, refine, func(rate float64, refining bool) (bool, bool) {
		tried = append(tried, rate)
		if refining {
			refined++
		}
		passed := rate <= limit
		if passed && rate > best {
			best = rate
		}
		return passed, len(tried) == endAt
	})
	return tried, refined, best
}

func TestSearchMaxRefinesBetweenLastPassAndFirstFailure(t *testing.T) {
	// 10, 20, 40, 80 pass; 160 fails; refining: 113 fails, 95 passes.
	tried, refined, best := trace(10, 2, 30, 2, 100, 0)
	want := []float64{10, 20, 40, 80, 160, math.Sqrt(80 * 160), math.Sqrt(80 * math.Sqrt(80*160))}
	if len(tried) != len(want) || refined != 2 {
		t.Fatalf("tried %v (%d refining), want %v", tried, refined, want)
	}
	for i := range want {
		if math.Abs(tried[i]-want[i]) > 1e-9 {
			t.Fatalf("tried %v, want %v", tried, want)
		}
	}
	if math.Abs(best-95.14) > 0.01 {
		t.Fatalf("best %.2f, want 95.14", best)
	}
	// Without refining, the ramp reports one whole step under the limit.
	if _, refined, best := trace(10, 2, 30, 0, 100, 0); best != 80 || refined != 0 {
		t.Fatalf("refine 0: best %v, %d refining steps", best, refined)
	}
	// Refining never goes past what the bracket allows: within factor^(1/2^k) of the limit.
	for _, limit := range []float64{47, 50, 53, 59, 64, 73} {
		_, _, best := trace(10000, 1.25, 30, 2, limit*1000, 0)
		if best > limit*1000 || best < limit*1000/math.Pow(1.25, 0.25) {
			t.Fatalf("limit %vk: best %.0f", limit, best)
		}
	}
}

func TestSearchMaxWithoutBracketDoesNotRefine(t *testing.T) {
	// The first step fails: nothing passed, nothing to refine between.
	if tried, _, best := trace(200, 2, 30, 3, 100, 0); len(tried) != 1 || best != 0 {
		t.Fatalf("tried %v, best %v", tried, best)
	}
	// The step limit came first: never failed, nothing to refine.
	if tried, refined, _ := trace(10, 2, 3, 3, 1e9, 0); len(tried) != 3 || refined != 0 {
		t.Fatalf("tried %v (%d refining)", tried, refined)
	}
	// The search ends when told to (the tool at its limit), refining or not.
	if tried, _, _ := trace(10, 2, 30, 3, 100, 2); len(tried) != 2 {
		t.Fatalf("tried %v after an end at step 2", tried)
	}
	if tried, refined, _ := trace(10, 2, 30, 3, 100, 6); len(tried) != 6 || refined != 1 {
		t.Fatalf("tried %v (%d refining) after an end at step 6", tried, refined)
	}
}
