package bench

import (
	"context"
	"encoding/json"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// HeldCheckouts returns a Setup in which every caller checks out a worker of c for the
// whole run (released in cleanup) and calls method with args on it: one call at a time
// when the Op is asked for one call, else that many calls pipelined with Checkout.Go and
// then waited for. A pipelined call's latency runs from the start of its batch to the
// return of its Wait. Results are kept raw (not decoded).
func HeldCheckouts(c *client.Client, method string, args []any) Setup {
	return func(ctx context.Context, _ int) (Op, func(), error) {
		co, err := c.Checkout(ctx)
		if err != nil {
			return nil, nil, err
		}
		var res json.RawMessage
		var pend []*client.Pending
		op := func(ctx context.Context, n int, rec *Histogram) (int, error) {
			start := time.Now()
			if n == 1 {
				err := co.Call(ctx, method, &res, args...)
				if err != nil {
					return 0, err
				}
				rec.Record(time.Since(start))
				return 1, nil
			}
			pend = pend[:0]
			for range n {
				pend = append(pend, co.Go(method, args...))
			}
			for i, p := range pend {
				if err := p.Wait(ctx, &res); err != nil {
					return i, err
				}
				rec.Record(time.Since(start))
			}
			return n, nil
		}
		return op, co.Release, nil
	}
}

// OneShot returns a Setup in which every caller makes one-shot calls (Client.Call: checkout,
// call, release), one at a time. Results are kept raw.
func OneShot(c *client.Client, method string, args []any) Setup {
	return func(context.Context, int) (Op, func(), error) {
		var res json.RawMessage
		op := func(ctx context.Context, _ int, rec *Histogram) (int, error) {
			start := time.Now()
			if err := c.Call(ctx, method, &res, args...); err != nil {
				return 0, err
			}
			rec.Record(time.Since(start))
			return 1, nil
		}
		return op, nil, nil
	}
}
