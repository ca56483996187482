//go:build !linux

package bench

import (
	"context"
	"errors"
)

// rawConnect: the raw connector is Linux-only; connect uses openConns.
func (r *runner) rawConnect(ctx context.Context, hist *shardedHist) (openedConns, bool, error) {
	return openedConns{}, false, nil
}

// hold needs the raw connector.
func (r *runner) hold(ctx context.Context, emit func(Result)) error {
	return errors.New("bench: hold needs Linux (its raw connector drives the connections over epoll)")
}
