package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// applyEnvAndConfig fills every flag not given on the command line from SOCKMESH_<NAME>
// (upper case, '-' → '_'), then from the config file (same keys as the flags). Precedence:
// command line, environment, file, default.
func applyEnvAndConfig(fs *flag.FlagSet, configPath string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var fileVals map[string]any
	if configPath != "" {
		b, err := os.ReadFile(configPath)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := yaml.Unmarshal(b, &fileVals); err != nil {
			return fmt.Errorf("config %s: %w", configPath, err)
		}
		for k := range fileVals {
			if fs.Lookup(k) == nil {
				return fmt.Errorf("config %s: unknown key %q", configPath, k)
			}
		}
	}
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "SOCKMESH_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", env, v, err))
			}
			return
		}
		if v, ok := fileVals[f.Name]; ok {
			s := fmt.Sprint(v)
			if list, ok := v.([]any); ok {
				parts := make([]string, len(list))
				for i, p := range list {
					parts[i] = fmt.Sprint(p)
				}
				s = strings.Join(parts, ",")
			}
			if err := f.Value.Set(s); err != nil {
				errs = append(errs, fmt.Sprintf("config key %q = %q: %v", f.Name, s, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// byteSize is a flag value like 1048576, 1MiB, 64KiB.
type byteSize int64

func (b *byteSize) String() string { return fmt.Sprint(int64(*b)) }
func (b *byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suf)), u.m
			break
		}
	}
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n < 0 {
		return fmt.Errorf("not a byte size: %q (use e.g. 1048576, 64KiB, 1MiB)", s)
	}
	*b = byteSize(n * mult)
	return nil
}
