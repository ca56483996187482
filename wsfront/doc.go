// Package wsfront is sockmesh's client edge: it upgrades HTTP requests on /socketcluster/ to
// WebSocket connections (gorilla/websocket) and speaks the SocketCluster v2 protocol on them —
// handshake, ping/pong, auth tokens, pub/sub packets, application events — so the unmodified
// npm socketcluster-client works against it.
//
// Each connection has at most one reader and one writer goroutine. Frames for a connection
// wait in a send queue bounded in bytes; a client whose queue overflows is disconnected rather
// than allowed to stall anyone else. wsfront knows nothing about channels beyond their names:
// subscriptions and publications go to a Broker, which the node implements.
package wsfront
