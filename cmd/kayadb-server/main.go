// Command kayadb-server runs one node of a KayaDB cluster.
//
// With no flags it runs a single-node cluster in ./kayadb-data that serves
// clients on 127.0.0.1:7379:
//
//	kayadb-server
//	kayactl --server 127.0.0.1:7379 put hello world
//
// A three-node cluster on one machine:
//
//	kayadb-server --node-id 1 --data n1 --peer 1=127.0.0.1:7481,127.0.0.1:7379 \
//	    --peer 2=127.0.0.1:7482,127.0.0.1:7380 --peer 3=127.0.0.1:7483,127.0.0.1:7381
//	(and the same --peer list for nodes 2 and 3)
//
// Run kayadb-server --help for every flag; docs/getting-started.md walks
// through a cluster.
package main

import (
	"os"

	"github.com/kayadb/kayadb/internal/server"
)

func main() {
	os.Exit(server.Main(os.Args[1:], os.Stdout, os.Stderr))
}
