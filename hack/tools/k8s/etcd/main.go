// Command etcd wraps etcd's real entry point so that etcd is built from the
// same pinned module graph as the Kubernetes binaries (etcd's own server
// module uses replace directives, so `go install` cannot build it).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
