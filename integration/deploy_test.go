package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
	"go.yaml.in/yaml/v3"
)

// The Kubernetes manifests parse, and hold together: the StatefulSet's serviceName is the
// headless Service, probes hit /readyz and /healthz on the admin port, the preStop hook
// drains, the grace period outlasts the drain, the PDB and Services select the pods, and the
// keys come from the Secret. (No cluster here: nothing was applied.)
func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "deploy", "kubernetes", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/kubernetes")
	}
	byKind := map[string][]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if doc == nil {
				continue
			}
			kind, _ := doc["kind"].(string)
			if kind == "" || doc["apiVersion"] == nil {
				t.Fatalf("%s: a document without kind/apiVersion", f)
			}
			if kind != "Kustomization" && get(doc, "metadata", "name") == nil {
				t.Fatalf("%s: %s without metadata.name", f, kind)
			}
			byKind[kind] = append(byKind[kind], doc)
		}
	}
	for _, k := range []string{"StatefulSet", "Service", "PodDisruptionBudget", "Secret", "Kustomization", "NetworkPolicy"} {
		if len(byKind[k]) == 0 {
			t.Fatalf("no %s", k)
		}
	}
	ss := byKind["StatefulSet"][0]
	headless := ""
	for _, s := range byKind["Service"] {
		if get(s, "spec", "clusterIP") == "None" {
			headless = get(s, "metadata", "name").(string)
			if get(s, "spec", "publishNotReadyAddresses") != true {
				t.Error("headless Service must publish not-ready addresses (pods join before they are ready)")
			}
		}
		if sel, _ := get(s, "spec", "selector").(map[string]any); sel["app.kubernetes.io/name"] != "sockmesh" {
			t.Errorf("Service %v does not select the pods", get(s, "metadata", "name"))
		}
	}
	if headless == "" || get(ss, "spec", "serviceName") != headless {
		t.Fatalf("StatefulSet serviceName %v is not the headless Service %q", get(ss, "spec", "serviceName"), headless)
	}
	if get(ss, "spec", "podManagementPolicy") != "Parallel" {
		t.Error("podManagementPolicy must be Parallel (a pod is ready only once joined)")
	}
	pod := get(ss, "spec", "template", "spec").(map[string]any)
	c := pod["containers"].([]any)[0].(map[string]any)
	if p := get(c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
		t.Errorf("readiness probe %v, want /readyz", p)
	}
	if p := get(c, "livenessProbe", "httpGet", "path"); p != "/healthz" {
		t.Errorf("liveness probe %v, want /healthz", p)
	}
	pre, _ := get(c, "lifecycle", "preStop", "exec", "command").([]any)
	if len(pre) < 2 || pre[1] != "drain" {
		t.Errorf("preStop %v does not run sockmesh drain", pre)
	}
	env := map[string]map[string]any{}
	for _, e := range c["env"].([]any) {
		em := e.(map[string]any)
		env[em["name"].(string)] = em
	}
	drain, err := time.ParseDuration(env["SOCKMESH_DRAIN_DURATION"]["value"].(string))
	if err != nil {
		t.Fatal(err)
	}
	grace := time.Duration(pod["terminationGracePeriodSeconds"].(int)) * time.Second
	if need := drain + 5*time.Second + 3*time.Second; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v must exceed drain %v + handoff 5s + leave 3s", grace, drain)
	}
	for _, k := range []string{"SOCKMESH_CLUSTER_KEY", "SOCKMESH_AUTH_KEY", "SOCKMESH_ADMIN_TOKEN"} {
		if get(env[k], "valueFrom", "secretKeyRef", "name") != "sockmesh-keys" {
			t.Errorf("%s not from the sockmesh-keys Secret", k)
		}
	}
	for _, k := range []string{"SOCKMESH_ADMIN_INSECURE", "SOCKMESH_PPROF", "SOCKMESH_ADMIN_ALLOW_ORIGINS"} {
		if env[k] != nil {
			t.Errorf("%s set: the admin port must stay closed", k)
		}
	}
	if ann, _ := get(ss, "spec", "template", "metadata", "annotations").(map[string]any); ann["prometheus.io/scrape"] != nil {
		t.Error("prometheus.io/scrape annotation: annotation scraping cannot send the admin token")
	}
	checkNetworkPolicy(t, byKind["NetworkPolicy"])
	// kubectl apply -k applies what the Kustomization lists: every manifest but the example
	// Secret (created by hand from random bytes).
	listed := map[string]bool{}
	res, _ := get(byKind["Kustomization"][0], "resources").([]any)
	for _, r := range res {
		listed[r.(string)] = true
	}
	for _, f := range files {
		base := filepath.Base(f)
		if want := base != "kustomization.yaml" && base != "secret.example.yaml"; listed[base] != want {
			t.Errorf("%s listed in kustomization.yaml: %v, want %v", base, listed[base], want)
		}
	}
	join := env["SOCKMESH_JOIN"]["value"].(string)
	if !strings.Contains(join, "sockmesh-0."+headless+":8003") {
		t.Errorf("join %q does not name the pods through the headless Service", join)
	}
	pdb := byKind["PodDisruptionBudget"][0]
	if sel, _ := get(pdb, "spec", "selector", "matchLabels").(map[string]any); sel["app.kubernetes.io/name"] != "sockmesh" {
		t.Error("PodDisruptionBudget does not select the pods")
	}
}

// checkNetworkPolicy: the mesh and gossip ports (TCP and UDP) admit the sockmesh pods and
// nothing else, the admin port no one beyond the pods and a named namespace, the client port
// everyone.
func checkNetworkPolicy(t *testing.T, pols []map[string]any) {
	t.Helper()
	if len(pols) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(pols))
	}
	np := pols[0]
	if sel, _ := get(np, "spec", "podSelector", "matchLabels").(map[string]any); sel["app.kubernetes.io/name"] != "sockmesh" {
		t.Fatal("NetworkPolicy does not select the sockmesh pods")
	}
	if types, _ := get(np, "spec", "policyTypes").([]any); len(types) != 1 || types[0] != "Ingress" {
		t.Errorf("policyTypes %v, want [Ingress]", types)
	}
	// Who may reach port/protocol: "any", "pods", or "ns:<name>".
	who := map[string][]string{}
	rules, _ := get(np, "spec", "ingress").([]any)
	for _, r := range rules {
		var sources []string
		from, _ := get(r, "from").([]any)
		if len(from) == 0 {
			sources = []string{"any"}
		}
		for _, f := range from {
			switch {
			case get(f, "podSelector") != nil && get(f, "namespaceSelector") == nil:
				if get(f, "podSelector", "matchLabels", "app.kubernetes.io/name") == "sockmesh" {
					sources = append(sources, "pods")
				} else {
					sources = append(sources, fmt.Sprint("pods:", get(f, "podSelector")))
				}
			case get(f, "namespaceSelector") != nil && get(f, "podSelector") == nil:
				sources = append(sources, fmt.Sprint("ns:", get(f, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name")))
			default:
				sources = append(sources, fmt.Sprint("other:", f))
			}
		}
		ports, _ := get(r, "ports").([]any)
		if len(ports) == 0 {
			t.Errorf("an ingress rule without ports opens every port: %v", r)
		}
		for _, p := range ports {
			proto, _ := get(p, "protocol").(string)
			key := fmt.Sprintf("%v/%s", get(p, "port"), proto)
			who[key] = append(who[key], sources...)
		}
	}
	want := map[string][]string{
		"8000/TCP": {"any"},
		"8001/TCP": {"pods", "ns:monitoring"},
		"8002/TCP": {"pods"},
		"8003/TCP": {"pods"},
		"8003/UDP": {"pods"},
	}
	for port, w := range want {
		if fmt.Sprint(who[port]) != fmt.Sprint(w) {
			t.Errorf("port %s reachable from %v, want %v", port, who[port], w)
		}
	}
	for port := range who {
		if want[port] == nil {
			t.Errorf("port %s opened, not expected", port)
		}
	}
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

// The Dockerfile builds a static binary into a non-root distroless image exposing the four
// ports (read here; there is no Docker engine to build it), and the static build itself works:
// CGO_ENABLED=0 gives a statically linked binary.
func TestDockerfileAndStaticBuild(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{"CGO_ENABLED=0", "distroless/static", "USER 65532", "8000/tcp", "8001/tcp", "8002/tcp", "8003/tcp", "8003/udp", `ENTRYPOINT ["/sockmesh"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*HEALTHCHECK`).MatchString(df) {
		t.Error("Dockerfile has a HEALTHCHECK; orchestrators probe /healthz and /readyz")
	}
	if testing.Short() {
		t.Skip("-short: static build not tried")
	}
	out := filepath.Join(t.TempDir(), "sockmesh")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/sockmesh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, o)
	}
	if fp, err := exec.LookPath("file"); err == nil {
		o, _ := exec.Command(fp, out).CombinedOutput()
		if !regexp.MustCompile(`statically linked|static-pie linked`).Match(o) {
			t.Errorf("not static: %s", o)
		}
	}
	if o, err := exec.Command(out, "serve", "--version").CombinedOutput(); err != nil {
		t.Errorf("static binary: %v\n%s", err, o)
	}
}

// The systemd unit passes systemd-analyze verify (with the binary and environment file at
// test paths), when systemd-analyze is installed.
func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: deploy/systemd/sockmesh.service not verified")
	}
	b, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", "sockmesh.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	envFile := filepath.Join(dir, "sockmesh.env")
	if err := os.WriteFile(envFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	unit := strings.NewReplacer("/usr/local/bin/sockmesh", harness.Binary(t), "/etc/sockmesh/sockmesh.env", envFile).Replace(string(b))
	path := filepath.Join(dir, "sockmesh.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(o)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, o)
	}
}
