// Package goclient runs the third-party Go SocketCluster client
// github.com/sacOO7/socketcluster-client-go v1.0.0, unmodified, against the real sockmesh
// binary (SOCKMESH_BIN): what its own test program checks, on a 2-node cluster. It is a
// module of its own so that the client's old dependencies never enter sockmesh's.
package goclient
