package mesh

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// logWriter routes the *log.Logger output of serf, memberlist and zmq4 into slog. Lines look
// like "[WARN] memberlist: Refuting a suspect message"; the [LEVEL] prefix becomes the slog level
// and the "serf:"/"memberlist:" prefix a component attribute. Lines without a level are logged at
// defaultLevel.
type logWriter struct {
	logger       *slog.Logger
	component    string
	defaultLevel slog.Level

	// noise, if set, takes gossip-port noise out of the log (gossiplog.go).
	noise *gossipNoise

	mu  sync.Mutex
	buf []byte
}

func newStdLogger(l *slog.Logger, component string, def slog.Level) *log.Logger {
	return log.New(&logWriter{logger: l, component: component, defaultLevel: def}, "", 0)
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) == 0 {
		w.buf = nil
	}
	return len(p), nil
}

func (w *logWriter) line(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	level := w.defaultLevel
	if strings.HasPrefix(s, "[") {
		if j := strings.IndexByte(s, ']'); j > 0 {
			switch s[1:j] {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			s = strings.TrimSpace(s[j+1:])
		}
	}
	component := w.component
	for _, c := range []string{"memberlist:", "serf:", "zmq4:"} {
		if strings.HasPrefix(s, c) {
			component = c[:len(c)-1]
			s = strings.TrimSpace(s[len(c):])
			break
		}
	}
	if w.noise != nil && level > slog.LevelDebug && w.noise.take(s, time.Now()) {
		return
	}
	if level > slog.LevelDebug && strings.Contains(s, "use of closed network connection") {
		level = slog.LevelDebug // shutdown noise: sends racing with Close
	}
	if !w.logger.Enabled(context.Background(), level) {
		return
	}
	w.logger.Log(context.Background(), level, s, "component", component)
}
