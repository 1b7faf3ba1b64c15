// Package testmain has only tests: a package whose TestMain serves all of its tests from
// one taskdtest server made by taskdtest.New, with a Go interface whose worker processes
// run TestMain again up to that New call. It shows (and tests) that use of
// pkg/taskdtest; there is nothing here to import.
package testmain
