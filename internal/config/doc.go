// Package config is taskd's configuration: the Config type that the daemon is built from,
// how it is read (Load: a YAML file plus TASKD_* environment overrides), its defaults
// (Normalize) and its rules (Validate). docs/config.md documents every key for users; keep
// it in step (a test checks that it names every key and that its examples load).
//
// Load walks the YAML document as yaml.Nodes rather than decoding it into maps, for three
// reasons: interface names and env variable names keep their case (a map-based library
// such as viper lower-cases keys, and reads '.' in "mail.send" as nesting); every problem
// can name its line; and the environment comes in as a parameter, so tests and callers
// decide what Load sees. Struct tags (`yaml:"max_workers"`) name the keys, so a new field
// is a new key, with its TASKD_ variable, and nothing else to change here.
//
// The package has no state: Load, Normalize and Validate are safe for concurrent use, and
// a Config is a plain value that nothing in taskd modifies after Validate. Other packages
// and tests may build one directly as a Go value, then Normalize and Validate it. The
// inputs besides the arguments are the default listen address, which depends on the user
// and $XDG_RUNTIME_DIR (wire.DefaultAddr), and the system's user and group databases: in
// them Validate looks up the names that allow and admin give (access.go) and an
// interface's user and group (isolation.go); for user, group and rlimits it also asks
// whether the checking process is root, and its own hard resource limits. Check a config
// as taskd runs.
package config
