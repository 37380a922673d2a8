// Command kayactl is KayaDB's operator command line: it reads and writes a
// database directory in local mode, shows metrics, flushes, compacts,
// checkpoints and recovers it, and decodes WAL, SSTable and MANIFEST files.
//
// See docs/cli.md for the commands, their output and the exit codes.
package main

import (
	"os"

	"github.com/kayadb/kayadb/internal/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
