package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// revision is set by the Makefile (-ldflags -X main.revision=...) where the go command's
// own VCS stamping is off (GOFLAGS=-buildvcs=false).
var revision string

// versionString reports the module version and VCS revision the binary was built from.
func versionString() string {
	v, rev, dirty := "(devel)", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = " (modified)"
				}
			}
		}
	}
	if revision != "" && rev == "unknown" {
		rev = revision
	}
	return fmt.Sprintf("sockmesh %s, revision %s%s, %s %s/%s", v, rev, dirty, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// printEffective writes every serve flag's effective value as YAML, in the --config format.
func printEffective(w io.Writer, fs *flag.FlagSet) error {
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		switch f.Name {
		case "print-config", "version", "config":
			return
		case "auth-key", "api-key", "cluster-key", "admin-token":
			if f.Value.String() != "" {
				out[f.Name] = "(set, hidden)"
				return
			}
		}
		out[f.Name] = f.Value.String()
	})
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v, _ := yaml.Marshal(out[k])
		fmt.Fprintf(&b, "%s: %s", k, v)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
