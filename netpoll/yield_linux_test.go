package netpoll

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestYieldAlwaysReturns: many goroutines yield over and over while the network is busy
// (another goroutine's socket traffic makes the scheduler poll at every moment); a yield whose
// wake-up the poller reported at the wrong moment would wait forever.
func TestYieldAlwaysReturns(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	stop := make(chan struct{})
	s, c := tcpPair(t)
	go func() { // a ping-pong over loopback TCP: a poll finds something every few µs
		buf := make([]byte, 1)
		for {
			if _, err := s.Read(buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 1)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5000 {
				Yield()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("a yield has not returned within 60 s")
	}
	close(stop)
}

// TestYieldRunsWhatTheNetworkMadeReady: a goroutine that only yields does not keep a reader
// whose socket became readable from running (with runtime.Gosched it does, until sysmon
// polls the network ~10 ms later).
func TestYieldRunsWhatTheNetworkMadeReady(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s, c := tcpPair(t)
	read := make(chan struct{})
	go func() {
		buf := make([]byte, 1)
		if _, err := s.Read(buf); err == nil {
			close(read)
		}
	}()
	runtime.Gosched() // the reader waits in the poller
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	// Busy, yielding only, until the reader has run: count the yields it took.
	for yields := 1; ; yields++ {
		Yield()
		select {
		case <-read:
			if yields > 3 {
				t.Fatalf("the reader ran after %d yields", yields)
			}
			return
		default:
		}
		if yields > 1e6 {
			t.Fatal("the reader never ran")
		}
	}
}
