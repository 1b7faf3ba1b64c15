// Package config defines taskd's configuration: the Config type that the daemon is built
// from, its defaults (Normalize), its rules (Validate), and how raw YAML or environment
// values become its field types (DecodeHook, ParseByteSize).
//
// It does not read files or the environment: cmd/taskd does that with viper and hands the
// raw values to mapstructure with DecodeHook. Keeping this package free of viper lets every
// other package, and tests, build a Config as a plain Go value.
//
// The usual sequence is decode, Normalize, Validate. Nothing here has state of its own,
// and all of it is safe for concurrent use; the one input besides the arguments is the
// default listen address, which depends on the user and $XDG_RUNTIME_DIR
// (wire.DefaultAddr). A Config is a value that nothing in taskd modifies after Validate. docs/config.md documents every key for users; keep it in step.
package config
