// Package httpapi is the node's HTTP API for backends: publish and broadcast, list channels,
// kick subscribers off a channel, disconnect the connections of a user, cluster-wide. A
// cluster-wide call is answered by the local node and by every other node through its admin
// listener's /local/ endpoints (the node-to-node calls), with the same key. It knows the node
// only through the Node interface. docs/api.md and docs/openapi.yaml describe the shapes.
package httpapi
