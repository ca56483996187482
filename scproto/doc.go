// Package scproto is the SocketCluster v2 protocol as bytes: decoding an inbound frame into a
// packet (one object, or an array of them: SocketCluster's "batch"), encoding the events and
// responses the server sends, the error objects clients rebuild, the close codes clients act
// on, and the rules for channel names. It has no sockets and no state: the front (wsfront)
// parses every frame here, and FuzzDecode and FuzzScanner check the parser against
// encoding/json.
package scproto
