package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/node"
)

func TestBenchCommandJSONAndTable(t *testing.T) {
	n, err := node.New(node.Config{WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", Name: "b", DrainDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	var out, errb bytes.Buffer
	err = benchMain(context.Background(), []string{"--url", n.WSURL(), "--scenario", "fanout", "--subscribers", "5",
		"--publishers", "1", "--rate", "100", "--warmup", "0s", "--duration", "300ms", "--json", "--label", "unit"}, &out, &errb)
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	sc := bufio.NewScanner(&out)
	lines := 0
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("not JSON: %s", sc.Text())
		}
		if r["scenario"] != "fanout" || r["label"] != "unit" || r["lost"] != 0.0 || r["delivered"].(float64) <= 0 {
			t.Fatalf("result: %s", sc.Text())
		}
		lines++
	}
	if lines != 1 || !strings.Contains(errb.String(), "delivered/s") {
		t.Fatalf("%d JSON lines; stderr:\n%s", lines, errb.String())
	}
	for _, bad := range [][]string{{"--scenario", "nope"}, {"--ack", "maybe"}, {"--server-pid", "x"}, {"extra"}} {
		if err := benchMain(context.Background(), append([]string{"--url", n.WSURL()}, bad...), &out, &errb); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
