package access

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/sockmesh/sockmesh/scproto"
	"go.yaml.in/yaml/v3"
)

// Policy is channel access control from configuration: an ordered list of rules by
// channel pattern, each saying who may subscribe and who may publish. The first rule whose
// pattern matches decides; a channel no rule matches is refused.
//
//	anonymous: true              # may unauthenticated sockets use rules that say "anyone"?
//	rules:
//	  - channel: "public.*"      # '*' matches any characters, dots included
//	    subscribe: anyone        # anyone | authenticated | nobody
//	    publish: authenticated
//	  - channel: "user.{sub}.*"  # {claim} must equal that claim of the socket's token
//	    subscribe: authenticated
//	    publish: authenticated
//	  - channel: "admin.*"
//	    subscribe: authenticated
//	    publish: authenticated
//	    require: {role: admin}   # claims that must be present with these values
type Policy struct {
	Anonymous bool   `yaml:"anonymous"`
	Rules     []Rule `yaml:"rules"`
}

// Rule is one rule of an Policy.
type Rule struct {
	Channel   string            `yaml:"channel"`
	Subscribe string            `yaml:"subscribe"`
	Publish   string            `yaml:"publish"`
	Require   map[string]string `yaml:"require"`

	re     *regexp.Regexp
	claims []string // claim names of the {placeholders}, in order
}

// LoadPolicy reads and validates a policy file; errors name the rule and the problem.
func LoadPolicy(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var p Policy
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := p.Compile(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &p, nil
}

var placeholder = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)

// Compile checks the rules and prepares their patterns.
func (p *Policy) Compile() error {
	if len(p.Rules) == 0 {
		return fmt.Errorf("access policy has no rules")
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Channel == "" {
			return fmt.Errorf("rule %d: channel pattern is empty", i+1)
		}
		for _, who := range []*string{&r.Subscribe, &r.Publish} {
			if *who == "" {
				*who = "nobody"
			}
			switch *who {
			case "anyone", "authenticated", "nobody":
			default:
				return fmt.Errorf("rule %d (%s): %q is not anyone, authenticated or nobody", i+1, r.Channel, *who)
			}
		}
		var sb strings.Builder
		sb.WriteString("^")
		rest := r.Channel
		for {
			loc := placeholder.FindStringSubmatchIndex(rest)
			if loc == nil {
				sb.WriteString(globToRegexp(rest))
				break
			}
			sb.WriteString(globToRegexp(rest[:loc[0]]))
			sb.WriteString("([^.]+)")
			r.claims = append(r.claims, rest[loc[2]:loc[3]])
			rest = rest[loc[1]:]
		}
		sb.WriteString("$")
		re, err := regexp.Compile(sb.String())
		if err != nil {
			return fmt.Errorf("rule %d (%s): %w", i+1, r.Channel, err)
		}
		r.re = re
	}
	return nil
}

func globToRegexp(s string) string {
	parts := strings.Split(s, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return strings.Join(parts, ".*")
}

// Allowed decides for the holder of claims (nil: unauthenticated), a socket or an actor of
// the node's HTTP API. It returns nil when the actor may do action ("subscribe" or
// "publish") on channel, or the error a client would get.
func (p *Policy) Allowed(claims Claims, channel, action string) error {
	verb, errName := "Subscription to", "SubscribeForbiddenError"
	if action == "publish" {
		verb, errName = "Publishing to", "PublishForbiddenError"
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		m := r.re.FindStringSubmatch(channel)
		if m == nil {
			continue
		}
		who := r.Subscribe
		if action == "publish" {
			who = r.Publish
		}
		switch {
		case who == "nobody":
			return scproto.NewError(errName, verb+" "+channel+" is not allowed")
		case claims == nil && (who == "authenticated" || !p.Anonymous || len(r.claims) > 0 || len(r.Require) > 0):
			return scproto.NewError("AuthRequiredError", verb+" "+channel+" requires authentication")
		}
		for j, name := range r.claims {
			if claimString(claims[name]) != m[j+1] {
				return scproto.NewError(errName, verb+" "+channel+" is not allowed for this user")
			}
		}
		for name, want := range r.Require {
			if claimString(claims[name]) != want {
				return scproto.NewError(errName, verb+" "+channel+" requires the "+name+" claim")
			}
		}
		return nil
	}
	return scproto.NewError(errName, verb+" "+channel+" is not allowed")
}

func claimString(v any) string {
	switch c := v.(type) {
	case nil:
		return "\x00" // never equal to a channel segment or a configured value
	case string:
		return c
	case float64:
		if c == float64(int64(c)) {
			return fmt.Sprint(int64(c))
		}
	}
	return fmt.Sprint(v)
}
