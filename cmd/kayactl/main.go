// Command kayactl is KayaDB's operator command line. By default it talks
// to a cluster (--server ADDR[,ADDR...], $KAYA_SERVER, else 127.0.0.1:7379):
// reads and writes keys, reports health and status, benchmarks, changes
// membership and takes backups. With --data DIR (or $KAYA_DATA), and only
// then, it opens a local database directory itself: reads and writes it,
// shows metrics, flushes, compacts, checkpoints and recovers it. It also
// decodes WAL, SSTable and MANIFEST files, and restores backups.
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
