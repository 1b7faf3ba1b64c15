package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRecyclingKeys(t *testing.T) {
	iface := func(t *testing.T, yaml string, env ...string) (Interface, error) {
		t.Helper()
		c, err := parse([]byte("interfaces:\n  p:\n    command: [w]\n"+yaml), env)
		if err != nil {
			return Interface{}, err
		}
		return c.Interfaces["p"], nil
	}
	t.Run("defaults", func(t *testing.T) {
		in, err := iface(t, "")
		require.NoError(t, err)
		assert.Zero(t, in.MaxAge)
		assert.Zero(t, in.MaxRSS)
		assert.Equal(t, DefaultRecycleJitter, *in.RecycleJitter)
	})
	t.Run("0 means never, and no jitter", func(t *testing.T) {
		in, err := iface(t, "    max_age: 0\n    max_rss: 0\n    recycle_jitter: 0\n")
		require.NoError(t, err)
		assert.Zero(t, in.MaxAge)
		assert.Zero(t, in.MaxRSS)
		assert.Zero(t, *in.RecycleJitter)
	})
	t.Run("values", func(t *testing.T) {
		in, err := iface(t, "    max_age: 90m\n    max_rss: 512MiB\n    recycle_jitter: 2.5%\n")
		require.NoError(t, err)
		assert.Equal(t, 90*time.Minute, in.MaxAge)
		assert.Equal(t, 512*MiB, in.MaxRSS)
		assert.InDelta(t, 0.025, float64(*in.RecycleJitter), 1e-12)
		assert.Equal(t, "2.5%", in.RecycleJitter.String())
	})
	t.Run("from the environment", func(t *testing.T) {
		in, err := iface(t, "", "TASKD_INTERFACES_P_MAX_AGE=1h", "TASKD_INTERFACES_P_MAX_RSS=1GiB",
			"TASKD_INTERFACES_P_RECYCLE_JITTER=20%")
		require.NoError(t, err)
		assert.Equal(t, time.Hour, in.MaxAge)
		assert.Equal(t, GiB, in.MaxRSS)
		assert.InDelta(t, 0.2, float64(*in.RecycleJitter), 1e-12)
	})
	for yaml, want := range map[string]string{
		"    recycle_jitter: 0.1\n":  "a bare number is ambiguous",
		"    recycle_jitter: lots\n": "want a number with %",
		"    recycle_jitter: 100%\n": "must be from 0% to below 100%",
		"    max_age: -1s\n":         "max_age: must be ≥ 0",
		"    max_rss: -1\n":          "must not be negative",
	} {
		t.Run(yaml, func(t *testing.T) {
			_, err := iface(t, yaml)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
		})
	}
}
