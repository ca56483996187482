package pace

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestGateAdmitsInOrderAtTheRate: 40 waiters queued one after the other at 100 a second (a
// burst of one) go in arrival order — each is admitted 10 ms after the one before, so the
// order they record in can differ only where a wake-up was that late — and take at least the
// time the rate allows.
func TestGateAdmitsInOrderAtTheRate(t *testing.T) {
	const n = 40
	g := NewGate(100)
	g.TryTake(1)
	start := time.Now()
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Wait(context.Background(), 1, 0); err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}()
		for { // the next arrives once this one is queued (or, first of all, admitted)
			mu.Lock()
			done := len(order)
			mu.Unlock()
			if g.Waiting()+done > i {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	wg.Wait()
	if took := time.Since(start); took < (n-1)*10*time.Millisecond {
		t.Fatalf("%d admitted in %v at 100/s", n, took)
	}
	for i, w := range order {
		if w < i-2 || w > i+2 {
			t.Fatalf("admitted out of arrival order: %v", order)
		}
	}
}

func TestGateRefusesAWaitLongerThanAllowed(t *testing.T) {
	g := NewGate(100) // a burst of 1
	ctx := context.Background()
	for range 50 {
		go g.Wait(ctx, 1, 0)
	}
	for g.Waiting() < 40 {
		time.Sleep(time.Millisecond)
	}
	if a := g.Ahead(); a < 300*time.Millisecond {
		t.Fatalf("ahead %v with %d waiting at 100/s", a, g.Waiting())
	}
	start := time.Now()
	if err := g.Wait(ctx, 1, 100*time.Millisecond); !errors.Is(err, ErrTooLong) {
		t.Fatalf("a wait past the bound: %v", err)
	}
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("refused only after waiting")
	}
}

func TestGateWaiterThatGivesUpLeavesTheQueue(t *testing.T) {
	g := NewGate(10)
	ctx := context.Background()
	g.TryTake(1)
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- g.Wait(cctx, 1000, 0) }() // would hold the gate for 100 s
	for g.Waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait(ctx, 1, 0) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter behind one that left was not admitted")
	}
}

// TestGateFollowsItsFactor: at a tenth of 2,000/s, 40 admissions take 200 ms or more.
func TestGateFollowsItsFactor(t *testing.T) {
	g := NewGate(2000)
	g.SetFactor(0.1)
	if r := g.Rate(); r != 200 {
		t.Fatalf("rate %v", r)
	}
	start := time.Now()
	for range 40 {
		if err := g.Wait(context.Background(), 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 190*time.Millisecond {
		t.Fatalf("40 admitted in %v at 200/s", took)
	}
}

func TestGovernorSteps(t *testing.T) {
	g := NewGovernor(10 * time.Millisecond)
	gate := NewGate(1000)
	g.Govern(gate)
	g.step(15 * time.Millisecond) // once a little over: a burst, held
	if s := g.Share(); s != 1 {
		t.Fatalf("share after one look a little over: %v", s)
	}
	g.step(15 * time.Millisecond) // twice in a row: cut by target/p99, 2/3
	g.step(40 * time.Millisecond) // far over: cut by half at most
	if s := g.Share(); math.Abs(s-1.0/3) > 1e-9 {
		t.Fatalf("share after three slow looks: %v", s)
	}
	if r := gate.Rate(); math.Abs(r-1000.0/3) > 1e-6 {
		t.Fatalf("gate rate %v", r)
	}
	g.step(12 * time.Millisecond) // a little over: cut by 30 % at least
	if s := g.Share(); math.Abs(s-0.7/3) > 1e-9 {
		t.Fatalf("share after a look a little over: %v", s)
	}
	g.step(7 * time.Millisecond) // between half the target and the target: hold
	if s := g.Share(); math.Abs(s-0.7/3) > 1e-9 {
		t.Fatalf("share held: %v", s)
	}
	for range 100 {
		g.step(time.Hour)
	}
	if s := g.Share(); s != MinShare {
		t.Fatalf("share after a long overload: %v", s)
	}
	for range 30 {
		g.step(-1) // idle
	}
	if s := g.Share(); s != 1 {
		t.Fatalf("share after idle looks: %v", s)
	}
}

// TestGovernorSeesARunQueue: with more runnable goroutines than one CPU can run promptly,
// the governor's reading of the runtime's delay lowers the share.
func TestGovernorSeesARunQueue(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	g := NewGovernor(time.Millisecond)
	g.Interval = 50 * time.Millisecond
	g.Start()
	defer g.Stop()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				busy := time.Now()
				for time.Since(busy) < 200*time.Microsecond {
				}
				runtime.Gosched()
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.Share() == 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if g.Share() == 1 {
		t.Fatal("200 busy goroutines on one CPU, and the share stayed whole")
	}
}

// TestGateSplitsALargeWaiter: 60 units at 200 a second (bursts of 2) take the 0.3 s the rate
// allows, one burst at a time, not one burst's wait.
func TestGateSplitsALargeWaiter(t *testing.T) {
	g := NewGate(200)
	start := time.Now()
	if err := g.Wait(context.Background(), 60, 0); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 280*time.Millisecond {
		t.Fatalf("60 units admitted in %v at 200/s", took)
	}
	if g.TryTake(3) {
		t.Fatal("took more than a burst at once")
	}
}

// A unit given back goes to the first waiter at once, and never raises the gate above a burst.
func TestGateReturnGoesToTheWaiters(t *testing.T) {
	g := NewGate(1) // a burst of 1, then one a second
	if !g.TryTake(1) {
		t.Fatal("the first unit was not there")
	}
	admitted := make(chan error, 1)
	go func() { admitted <- g.Wait(context.Background(), 1, 0) }()
	for g.Waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	g.Return(1)
	if err := <-admitted; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("the waiter got the returned unit after %v", d)
	}
	g.Return(5)
	if !g.TryTake(1) || g.TryTake(1) {
		t.Fatal("five returned units let more than a burst through")
	}
}
