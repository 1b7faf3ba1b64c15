package config

// The security keys: who may call what (allow, admin, hide_forbidden), TLS for TCP
// listeners (tls), and how an interface's workers are isolated (user, group, umask,
// rlimits, cgroup). docs/security.md explains each against the threat it answers.

// Access names the peers allowed to do something: a peer is allowed if any list names it
// (its user, one of its groups, its uid or gid, or a name of its verified TLS client
// certificate). A nil *Access allows everyone who can connect; an empty one, nobody.
type Access struct {
	Users  []string `yaml:"users"`  // user names, resolved through the system's user database
	Groups []string `yaml:"groups"` // group names; a peer's supplementary groups count
	UIDs   []int    `yaml:"uids"`
	GIDs   []int    `yaml:"gids"`
	// TLSNames are matched against the SAN DNS names and URIs (e.g. SPIFFE IDs) of a
	// client certificate verified against tls.client_ca_file.
	TLSNames []string `yaml:"tls_names"`
}
