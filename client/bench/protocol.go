package bench

import (
	"bytes"
	"strconv"
)

// wire is the client protocol the tool speaks: SocketCluster (sockmesh, socketcluster-server)
// or Centrifugo's JSON protocol, so that the same load, measured the same way, runs against
// both servers (docs/benchmarks.md compares them side by side). Only what the traffic
// scenarios use is here: connect, subscribe, publish with an id, replies, pings and pushes.
// Deliveries are found by the payload marker in either protocol (payload.go).
type wire struct {
	name string
	// callKey opens a call's id in a frame to the server; replyKey the id of its answer.
	callKey, replyKey []byte
	// ids: every publication carries an id (Centrifugo requires one on a publish); with
	// SocketCluster only acknowledged ones do.
	ids bool
}

var (
	socketCluster = &wire{name: "socketcluster", callKey: []byte(`,"cid":`), replyKey: []byte(`"rid":`)}
	centrifugo    = &wire{name: "centrifugo", callKey: []byte(`,"id":`), replyKey: []byte(`"id":`), ids: true}
)

// Protocols are the names Config.Protocol accepts.
const Protocols = "socketcluster, centrifugo"

func wireNamed(name string) *wire {
	switch name {
	case "", "socketcluster", "sc":
		return socketCluster
	case "centrifugo":
		return centrifugo
	}
	return nil
}

// handshake appends the first call of a connection.
func (w *wire) handshake(b []byte, id int64) []byte {
	if w == centrifugo {
		// Anonymous connect: the server is configured to allow it (docs/benchmarks.md).
		b = append(b, `{"connect":{}`...)
	} else {
		b = append(b, `{"event":"#handshake","data":{"authToken":null}`...)
	}
	return w.endCall(b, id)
}

func (w *wire) subscribe(b []byte, ch string, id int64) []byte {
	if w == centrifugo {
		b = append(b, `{"subscribe":{"channel":`...)
	} else {
		b = append(b, `{"event":"#subscribe","data":{"channel":`...)
	}
	b = strconv.AppendQuote(b, ch)
	b = append(b, '}')
	return w.endCall(b, id)
}

// publishPrefix is a publication to ch up to its data, which the publisher appends, then
// endPublish.
func (w *wire) publishPrefix(ch string) []byte {
	b := []byte(`{"event":"#publish","data":{"channel":`)
	if w == centrifugo {
		b = []byte(`{"publish":{"channel":`)
	}
	b = strconv.AppendQuote(b, ch)
	return append(b, `,"data":`...)
}

// endPublish closes a publication started by publishPrefix and its data (id 0: none).
func (w *wire) endPublish(b []byte, id int64) []byte {
	b = append(b, '}')
	return w.endCall(b, id)
}

func (w *wire) endCall(b []byte, id int64) []byte {
	if id != 0 {
		b = append(b, w.callKey...)
		b = strconv.AppendInt(b, id, 10)
	}
	return append(b, '}')
}

// isPing: the frame is, or holds, a ping the client must answer (SocketCluster: an empty
// frame or "#1"; Centrifugo: an empty object on a line of its own, possibly among other
// messages of the same frame).
func (w *wire) isPing(frame []byte) bool {
	if w != centrifugo {
		return len(frame) == 0 || len(frame) == 2 && frame[0] == '#' && frame[1] == '1'
	}
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		if string(line) == "{}" {
			return true
		}
	}
	return false
}

// pong is the answer to a ping frame (already framed).
func (w *wire) pong(frame []byte) []byte {
	switch {
	case w == centrifugo:
		return pongCentrifugo
	case len(frame) == 2:
		return pongV1
	}
	return pongV2
}

var pongCentrifugo = appendFrame(nil, []byte("{}"))
