package client

import (
	"net/http"
	"testing"
	"time"
)

// TestRetryAfterHostileValues: whatever a server (or a proxy before it) puts in Retry-After,
// the wait is between nothing and 5 minutes, and only a 503 or 429 asks for one.
func TestRetryAfterHostileValues(t *testing.T) {
	cases := []struct {
		status int
		value  string
		want   time.Duration
	}{
		{503, "7", 7 * time.Second},
		{429, " 2 ", 2 * time.Second},
		{503, "300", 5 * time.Minute},
		{503, "301", 5 * time.Minute},
		{503, "9223372036854775807", 5 * time.Minute}, // × 1 s would overflow
		{503, "18446744073709551615", 5 * time.Minute},
		{503, "99999999999999999999999999", 5 * time.Minute},
		{503, "0", 0},
		{503, "-5", 0},
		{503, "1e9", 0},
		{503, "Fri, 04 Dec 2026 17:00:00 GMT", 0},
		{503, "", 0},
		{400, "7", 0},
		{200, "7", 0},
	}
	for _, c := range cases {
		resp := &http.Response{StatusCode: c.status, Header: http.Header{"Retry-After": {c.value}}}
		if got := retryAfter(resp); got != c.want {
			t.Errorf("%d Retry-After %q: %v, want %v", c.status, c.value, got, c.want)
		}
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"1", "300", "9223372036854775807", "-1", "", "0x10", "1.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {v}}}
		if d := retryAfter(resp); d < 0 || d > 5*time.Minute {
			t.Fatalf("Retry-After %q: %v", v, d)
		}
	})
}
