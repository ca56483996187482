package main

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/node"
)

// TestServeFlagsAreTheLibraryDefaults: `sockmesh serve` without flags configures the node
// exactly as a program that embeds it with a zero node.Config: every flag's default is the
// library's. (Before, the two were written down twice and drifted: a program got write
// delay 0 and never released memory after a reconnect storm, the CLI 20 ms and 1,000.)
func TestServeFlagsAreTheLibraryDefaults(t *testing.T) {
	for _, kv := range os.Environ() { // SOCKMESH_<FLAG> would set a flag
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SOCKMESH_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	cfg, exit, err := parseServe(nil, io.Discard)
	if err != nil || exit {
		t.Fatalf("parseServe: %v (exit %v)", err, exit)
	}
	cfg.Logger = nil
	want := node.Defaults()
	// What no flag sets: the library's defaults apply to both alike.
	cfg.Front.Path, cfg.Front.WriteBytes, cfg.Front.ServerInvokeTimeout = want.Front.Path, want.Front.WriteBytes, want.Front.ServerInvokeTimeout
	for _, d := range diff("", reflect.ValueOf(cfg), reflect.ValueOf(want)) {
		t.Error(d)
	}
}

// diff lists the fields where a and b differ, by path.
func diff(path string, a, b reflect.Value) []string {
	if a.Kind() == reflect.Struct {
		var out []string
		for i := range a.NumField() {
			out = append(out, diff(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))...)
		}
		return out
	}
	if a.Kind() == reflect.Func {
		if a.IsNil() != b.IsNil() {
			return []string{path + ": func set on one side only"}
		}
		return nil
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return []string{fmt.Sprintf("%s: flag default %v, library default %v", path, a.Interface(), b.Interface())}
	}
	return nil
}

// TestRecoverRuleFlag: --recover-rule is pattern,messages,age, split at the last two commas;
// empty fields take the defaults; anything else is a clear error.
func TestRecoverRuleFlag(t *testing.T) {
	cfg, _, err := parseServe([]string{"--recover-rule", "prices.*,100,10s", "--recover-rule", "a,b.*,,1m", "--recover-rule", "chat.*,50,"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []node.RecoverRule{{Pattern: "prices.*", Messages: 100, Age: 10 * time.Second}, {Pattern: "a,b.*", Age: time.Minute}, {Pattern: "chat.*", Messages: 50}}
	if !reflect.DeepEqual(cfg.Recover.Rules, want) {
		t.Fatalf("rules %+v, want %+v", cfg.Recover.Rules, want)
	}
	for _, bad := range []string{"prices.*", "prices.*,100", ",100,10s", "p,-1,10s", "p,0,10s", "p,x,10s", "p,1,-5s", "p,1,10", "p,18446744073709551616,1s", "[,1,1s"} {
		if _, _, err := parseServe([]string{"--recover-rule", bad}, io.Discard); err == nil {
			t.Errorf("--recover-rule %q accepted", bad)
		}
	}
}

// TestNameFlag: a node name must survive gossip, mailbox topics and clients' JSON positions
// unchanged; anything else is refused at start with a clear error, not found later as
// recoveries that never match.
func TestNameFlag(t *testing.T) {
	for _, good := range []string{"n1", "node-1.eu-west", "ünïcode-名前", strings.Repeat("h", 253), "a~1 b"} {
		if _, _, err := parseServe([]string{"--name", good}, io.Discard); err != nil {
			t.Errorf("--name %q refused: %v", good, err)
		}
	}
	for _, bad := range []string{"", "a\x00b", "a\nb", "tab\there", "\x7f", "bell\a", "\xff\xfe", "a\u0085b", strings.Repeat("h", 256)} {
		_, _, err := parseServe([]string{"--name", bad}, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), "name: ") {
			t.Errorf("--name %q: %v, want a name error", bad, err)
		}
	}
}
