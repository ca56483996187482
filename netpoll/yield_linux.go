package netpoll

import (
	"os"
	"runtime"
	"syscall"
)

// Yield lets the goroutines that are runnable, and those the network has made ready since the
// scheduler last looked, run before the caller goes on; a long loop that writes many sockets
// calls it now and then. runtime.Gosched is not enough: Go's scheduler polls the network only
// when it has nothing else to run (or from sysmon, every 10 ms or so), so a reader whose
// socket became readable waits behind a busy goroutine that merely yields. Yield parks the
// caller on a pipe it has just made readable: once the runnable goroutines have run, the
// scheduler polls the network and finds the pipe with every socket that became ready, and
// runs them all. It costs two system calls (a few µs); without a pipe it is runtime.Gosched.
func Yield() {
	y := takeYielder()
	if y == nil {
		runtime.Gosched()
		return
	}
	defer giveYielder(y)
	parked := false
	var buf [64]byte
	err := y.rc.Read(func(fd uintptr) bool {
		if !parked {
			// The byte is written here, after RawConn.Read has reset the descriptor's
			// readiness: written before, a poll in between would report it, the reset would
			// forget it, and the wait below would never end (a storm test found spreads
			// stuck that way).
			parked = true
			if _, err := y.w.Write([]byte{0}); err != nil {
				return true
			}
			return false // wait for the poller to report the byte: that is the yield
		}
		for {
			if n, err := syscall.Read(int(fd), buf[:]); n <= 0 || err != nil {
				return true
			}
		}
	})
	if err != nil {
		runtime.Gosched()
	}
}

// yielder is a pipe to park on (Yield); the caller holds it alone.
type yielder struct {
	r, w *os.File
	rc   syscall.RawConn
}

// yielders keeps a few pipes for the next yields; more are made while several goroutines
// yield at once, and closed when there is no room to keep them (a sync.Pool would drop
// them without closing their descriptors).
var yielders = make(chan *yielder, 8)

func takeYielder() *yielder {
	select {
	case y := <-yielders:
		return y
	default:
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil
	}
	rc, err := r.SyscallConn()
	if err != nil {
		r.Close()
		w.Close()
		return nil
	}
	return &yielder{r: r, w: w, rc: rc}
}

func giveYielder(y *yielder) {
	select {
	case yielders <- y:
	default:
		y.r.Close()
		y.w.Close()
	}
}
