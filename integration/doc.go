// Package integration holds multi-process tests of the real sockmesh binary: each node is a
// separate process started from $SOCKMESH_BIN (built by `make test`; built on demand when
// unset), reached over real sockets and stopped with real signals.
package integration
