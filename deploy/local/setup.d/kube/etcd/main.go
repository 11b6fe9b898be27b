// etcd for Conn's local Kubernetes control plane: `go install` of the server module fails
// on its replace directives, so this wrapper calls the same entry point as etcd's main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
