package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/store"
)

// stateSaveInterval is how often the daemon saves the trust snapshot and
// the metrics to the store (and once more at shutdown).
const stateSaveInterval = 30 * time.Second

// openStore opens the persistent state in the repo directory and starts
// its pruner. A second daemon on the same repo fails here with the store's
// *store.InUseError. The store closes last, after the coordinator has
// written its final changes.
func (d *daemon) openStore(ctx context.Context) error {
	st, err := store.Open(d.dir,
		store.WithRetention(d.cfg.Tasks.ResultRetention),
		store.WithLogger(d.log.With("subsystem", "store")))
	if err != nil {
		return fmt.Errorf("open state store: %w", err)
	}
	if err := st.Start(ctx); err != nil {
		_ = st.Close()
		return fmt.Errorf("start state store: %w", err)
	}
	d.store = st
	d.addCloser("state store", st.Close)
	return nil
}

// restoreState loads the trust snapshot and the metrics saved by the
// previous run. What cannot be read or is refused is logged and skipped:
// the daemon then starts from scratch for that part.
func (d *daemon) restoreState() {
	if snap, ok, err := d.store.LoadTrust(); err != nil {
		d.log.Warn("cannot load the saved trust snapshot; starting without it", "err", err)
	} else if ok {
		if err := d.trust.Restore(snap); err != nil {
			d.log.Warn("saved trust snapshot refused; starting without it", "err", err)
		}
	}
	var ms grid.MetricsSnapshot
	if ok, err := d.store.LoadMetrics(&ms); err != nil {
		d.log.Warn("cannot load the saved metrics; starting without them", "err", err)
	} else if ok {
		d.metrics.Restore(ms)
	}
}

// saveState writes the trust snapshot and the metrics to the store.
func (d *daemon) saveState(ctx context.Context) error {
	return errors.Join(
		d.store.SaveTrust(ctx, d.trust.Snapshot()),
		d.store.SaveMetrics(ctx, d.metrics.Snapshot()))
}

// startStateSaver saves the trust snapshot and the metrics every
// stateSaveInterval, and once more when it is stopped (at shutdown, before
// the trust graph and the store close).
func (d *daemon) startStateSaver() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(stateSaveInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := d.saveState(ctx); err != nil && ctx.Err() == nil {
					d.log.Warn("cannot save trust and metrics", "err", err)
				}
			}
		}
	}()
	d.addCloser("state saver", func() error {
		cancel()
		wg.Wait()
		if err := d.saveState(context.Background()); err != nil {
			return fmt.Errorf("save trust and metrics: %w", err)
		}
		return nil
	})
}
