package server

import (
	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/sandbox"
	"github.com/taskd-dev/taskd/internal/worker"
)

// isolation turns an interface's user, group, umask and rlimits into what
// worker.Config takes. The user and group are looked up once per spawner (at start and
// at each reload that changes the interface), not per spawn; an error (a user removed
// since the config was checked) fails every spawn of the interface, with the reason.
func isolation(ic config.Interface) (*worker.Identity, sandbox.Spec, error) {
	var spec sandbox.Spec
	if m, ok := ic.UmaskBits(); ok {
		spec.Umask = &m
	}
	for _, l := range ic.Rlimits.List() {
		spec.Rlimits = append(spec.Rlimits, sandbox.Rlimit{Resource: l.Name, Value: l.Value})
	}
	id, err := ic.Identity()
	if err != nil || id == nil {
		return nil, spec, err
	}
	return &worker.Identity{UID: id.UID, GID: id.GID, Groups: id.Groups, User: id.User, Home: id.Home}, spec, nil
}
