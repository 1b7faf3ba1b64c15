// Package deb holds the tests of the taskd Debian package that `make deb` builds with
// build.sh in this directory; it has no Go code of its own.
//
// The test builds the package into a temporary directory, checks its file list and
// control fields with dpkg-deb, unpacks it and runs the unpacked binaries on the shipped
// config. It is skipped where dpkg-deb is missing.
package deb
