// Package e2e holds process-level tests: they build the real binaries and
// drive a cluster of kayadb-server processes with the scripts and kayactl,
// as an operator would, and run the runbooks' commands as written. Most
// are skipped with -short. It has no code outside its tests.
package e2e
