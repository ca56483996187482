// Package node is one sockmesh node: it wires the WebSocket front (wsfront), the broker
// shards and the mesh, serves the operator HTTP endpoints, and owns the lifecycle (start,
// drain, stop). Embedders use it as a library: build a Node, register handlers and
// middleware on Node.Front, then Start it.
package node
