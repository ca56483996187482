//go:build !linux

package bench

import "context"

// rawConnect: the raw connector is Linux-only; connect uses openConns.
func (r *runner) rawConnect(ctx context.Context, hist *shardedHist) (openedConns, bool, error) {
	return openedConns{}, false, nil
}
