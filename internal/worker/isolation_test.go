package worker

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestUserEnv(t *testing.T) {
	id := &Identity{UID: 65534, GID: 65534, User: "nobody", Home: "/nonexistent"}
	env := []string{"PATH=/bin", "HOME=/root", "A=1", "TASKD_INTERFACE=x"}
	assert.Equal(t, []string{"PATH=/bin", "A=1", "TASKD_INTERFACE=x", "HOME=/nonexistent", "USER=nobody", "LOGNAME=nobody"},
		userEnv(env, map[string]string{"A": "1"}, id), "taskd's HOME is replaced by the user's")
	assert.Equal(t, []string{"PATH=/bin", "HOME=/srv/w", "LOGNAME=worker", "USER=nobody"},
		userEnv([]string{"PATH=/bin", "HOME=/srv/w", "LOGNAME=worker"}, map[string]string{"HOME": "/srv/w", "LOGNAME": "worker"}, id),
		"the interface's env wins")
}
