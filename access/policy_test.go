package access

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sockmesh/sockmesh/scproto"
)

const policyYAML = `
anonymous: true
rules:
  - channel: "public.*"
    subscribe: anyone
    publish: authenticated
  - channel: "user.{sub}.*"
    subscribe: authenticated
    publish: authenticated
  - channel: "admin.*"
    subscribe: authenticated
    publish: authenticated
    require: {role: admin}
  - channel: "readonly"
    subscribe: anyone
    publish: nobody
`

func TestAccessPolicy(t *testing.T) {
	f := filepath.Join(t.TempDir(), "access.yaml")
	os.WriteFile(f, []byte(policyYAML), 0o600)
	p, err := LoadPolicy(f)
	if err != nil {
		t.Fatal(err)
	}
	var anon Claims
	alice := Claims{"sub": "alice"}
	admin := Claims{"sub": "root", "role": "admin"}
	num := Claims{"sub": float64(42)}
	cases := []struct {
		who     Claims
		name    string
		ch, act string
		errName string // "" = allowed
	}{
		{anon, "anon", "public.news", "subscribe", ""},
		{anon, "anon", "public.news.sport", "subscribe", ""},
		{anon, "anon", "public.news", "publish", "AuthRequiredError"},
		{alice, "alice", "public.news", "publish", ""},
		{alice, "alice", "user.alice.inbox", "subscribe", ""},
		{alice, "alice", "user.bob.inbox", "subscribe", "SubscribeForbiddenError"},
		{anon, "anon", "user.alice.inbox", "subscribe", "AuthRequiredError"},
		{num, "sub 42", "user.42.inbox", "subscribe", ""},
		{alice, "alice", "admin.panel", "subscribe", "SubscribeForbiddenError"},
		{admin, "admin", "admin.panel", "publish", ""},
		{admin, "admin", "readonly", "publish", "PublishForbiddenError"},
		{anon, "anon", "readonly", "subscribe", ""},
		{alice, "alice", "unlisted", "subscribe", "SubscribeForbiddenError"},
		{alice, "alice", "publicX", "subscribe", "SubscribeForbiddenError"},
	}
	for _, c := range cases {
		err := p.Allowed(c.who, c.ch, c.act)
		got := ""
		if err != nil {
			got = err.(*scproto.Error).Name
		}
		if got != c.errName {
			t.Errorf("%s %s %s: got %q (%v), want %q", c.name, c.act, c.ch, got, err, c.errName)
		}
	}
	p.Anonymous = false
	if err := p.Allowed(anon, "public.news", "subscribe"); err == nil {
		t.Error("anonymous access off, yet an unauthenticated socket subscribed")
	}
}

func TestAccessPolicyErrorsNameTheRule(t *testing.T) {
	for body, want := range map[string]string{
		"rules:\n  - channel: a\n    subscribe: everyone\n": `rule 1 (a): "everyone"`,
		"rules:\n  - subscribe: anyone\n":                   "rule 1: channel pattern is empty",
		"rules: []\n":                                       "no rules",
		"rulez: []\n":                                       "field rulez not found",
	} {
		f := filepath.Join(t.TempDir(), "p.yaml")
		os.WriteFile(f, []byte(body), 0o600)
		_, err := LoadPolicy(f)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", body, err, want)
		}
	}
}
