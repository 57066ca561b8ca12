// Command banger is the banger CLI: one-command development sandboxes in microVMs.
package main

import (
	"os"

	"github.com/banger-dev/banger/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
