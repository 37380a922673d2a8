// Package layers keeps the module's import layering honest. Its test reads
// every package's imports (go list) and checks them against one table —
// which package may import which of the module's packages, and what its
// tests may import besides — and checks that every package has a doc
// comment. The table in layers_test.go is the source of truth;
// docs/architecture.md shows it, and the test fails when the two differ.
//
// The idea is tailscale's tstest/deptest and pebble's forbidden-imports
// test: a layer that starts to lean on another fails a test instead of a
// review. It has no code outside its tests.
package layers
