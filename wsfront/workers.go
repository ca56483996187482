package wsfront

import "sync/atomic"

// keptWorkers bounds the goroutines kept between tasks: ~2 MiB of stacks at most.
const keptWorkers = 256

// workers runs the short tasks a connection needs now and then — reading its upgrade
// request, a burst of frames, a burst of writes — on goroutines that are kept for the next
// task. A fresh goroutine starts with a small stack that the upgrade and the JSON handling
// grow again every time (runtime.newstack/copystack were 8 % of the node's CPU during a
// connection storm); a kept one has grown it already. At most max goroutines are kept
// (their stacks are the cost); when none is free a task gets a goroutine of its own.
type workers struct {
	max   int32
	kept  atomic.Int32
	tasks chan func()
	stop  chan struct{}
}

func newWorkers(max int) *workers {
	return &workers{max: int32(max), tasks: make(chan func()), stop: make(chan struct{})}
}

// run starts f on a waiting worker, or on a new goroutine.
func (w *workers) run(f func()) {
	select {
	case w.tasks <- f:
	default:
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	f()
	if w.kept.Add(1) > w.max {
		w.kept.Add(-1)
		return
	}
	defer w.kept.Add(-1)
	for {
		select {
		case f = <-w.tasks:
			f()
		case <-w.stop:
			return
		}
	}
}

// close ends the waiting workers; a worker busy with a task ends after it. It does not
// wait: a task may be the reader of a socket that stays open.
func (w *workers) close() { close(w.stop) }
