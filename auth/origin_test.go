package auth

import (
	"net/http/httptest"
	"testing"
)

func TestOrigins(t *testing.T) {
	o, err := ParseOrigins([]string{"https://app.example.com", "https://*.example.org", "http://localhost:8080/"})
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"":                             true, // not a browser
		"https://app.example.com":      true,
		"HTTPS://APP.EXAMPLE.COM":      true,
		"http://app.example.com":       false, // another scheme is another origin
		"https://evil.com":             false,
		"https://app.example.com.evil": false,
		"https://a.example.org":        true,
		"https://a.b.example.org":      true,
		"https://example.org":          false, // the wildcard needs a subdomain
		"https://evilexample.org":      false,
		"http://a.example.org":         false,
		"http://localhost:8080":        true,
		"http://localhost:8081":        false,
		"null":                         false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if got := o.Allow(r); got != want {
			t.Errorf("Allow(%q) = %v, want %v", origin, got, want)
		}
	}
	any, _ := ParseOrigins(nil)
	star, _ := ParseOrigins([]string{"*"})
	var zero Origins
	for _, o := range []Origins{any, star, zero} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Origin", "https://anything.example")
		if !o.Allow(r) {
			t.Error("an open origin list refused")
		}
	}
	for _, bad := range []string{"app.example.com", "ftp://x", "https://", "https://x/path", "https://x?q=1"} {
		if _, err := ParseOrigins([]string{bad}); err == nil {
			t.Errorf("ParseOrigins(%q) accepted", bad)
		}
	}
}
