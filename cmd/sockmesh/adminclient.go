package main

import (
	"net/http"
	"os"
	"time"
)

// adminAuth adds the credential of a guarded admin listener to every request: the admin
// token (Authorization: Bearer) or, failing that, the API key (X-API-Key).
type adminAuth struct {
	token, apiKey string
}

func (a adminAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	switch {
	case a.token != "":
		r.Header.Set("Authorization", "Bearer "+a.token)
	case a.apiKey != "":
		r.Header.Set("X-API-Key", a.apiKey)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// adminClient is the HTTP client of the commands that talk to a node's admin listener
// (cluster, drain); empty flags fall back to SOCKMESH_ADMIN_TOKEN and SOCKMESH_API_KEY.
func adminClient(token, apiKey string) *http.Client {
	if token == "" {
		token = os.Getenv("SOCKMESH_ADMIN_TOKEN")
	}
	if apiKey == "" {
		apiKey = os.Getenv("SOCKMESH_API_KEY")
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: adminAuth{token: token, apiKey: apiKey}}
}
