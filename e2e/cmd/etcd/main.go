// Command etcd is a real etcd 3.7 server built from the module proxy, used by
// the namespace testbed (make tools builds it as bin/etcd).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
