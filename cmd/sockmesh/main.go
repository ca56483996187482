// Command sockmesh is the sockmesh server and its tools: serve (the default) runs a node;
// pub and sub look at channels from a terminal; cluster shows a node's view of the cluster;
// bench generates load. Flag parsing and wiring only: the work is done in the packages.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

var commands = map[string]struct {
	run  func(args []string) error
	help string
}{
	"serve":   {runServe, "run a node (the default)"},
	"pub":     {runPub, "publish to a channel"},
	"sub":     {runSub, "print a channel's publications"},
	"cluster": {runCluster, "show a node's view of the cluster"},
	"bench":   {runBench, "generate load and measure a SocketCluster-compatible server"},
	"drain":   {runDrain, "move a node's clients to the other nodes, then stop it"},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: sockmesh [command] [flags]\n\ncommands:\n")
	for _, name := range []string{"serve", "pub", "sub", "cluster", "drain", "bench"} {
		if c, ok := commands[name]; ok {
			fmt.Fprintf(os.Stderr, "  %-8s %s\n", name, c.help)
		}
	}
	fmt.Fprintf(os.Stderr, "\nRun 'sockmesh COMMAND -h' for a command's flags.\n")
}

func main() {
	args := os.Args[1:]
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage()
		return
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "sockmesh: unknown command %q\n", name)
		usage()
		os.Exit(2)
	}
	if err := c.run(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "sockmesh %s: %v\n", name, err)
		os.Exit(1)
	}
}
