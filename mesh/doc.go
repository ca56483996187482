// Package mesh is the node-to-node layer of sockmesh: Serf membership, one ZeroMQ PUB socket per
// process, one supervised SUB socket per peer, and interest routing so that a peer only receives
// the channels it wants.
package mesh
