package test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestCodeMap holds the packages to the README's code map: each imports only the roost packages
// it may, so the layers stay layers (a room knows nothing of the ring's gossip or of HTTP, the
// client nothing of the cluster, the server binary nothing of tests).
func TestCodeMap(t *testing.T) {
	allowed := map[string][]string{
		"protocol":             {},
		"batch":                {},
		"internal/peer":        {},
		"internal/loop":        {},
		"internal/wait":        {},
		"internal/netns":       {},
		"ring":                 {"internal/loop", "protocol"},
		"auth":                 {"protocol"},
		"limit":                {"auth", "protocol"},
		"client":               {"internal/loop", "protocol"},
		"node/room":            {"batch", "limit", "protocol", "ring"},
		"node/pause":           {"internal/loop", "internal/peer", "protocol", "ring"},
		"node/handoff":         {"internal/loop", "internal/peer", "node/room", "protocol", "ring"},
		"node/quorum":          {"internal/loop", "internal/peer", "ring"},
		"node/replica":         {"internal/loop", "internal/peer", "node/room", "protocol", "ring"},
		"node/webhook":         {"node/room"},
		"node/edge":            {"auth", "node/room", "protocol", "ring"},
		"internal/httpapi":     {"auth", "internal/loop", "limit", "protocol", "ring"},
		"router":               {"auth", "batch", "internal/httpapi", "internal/peer", "limit", "protocol", "ring"},
		"node":                 {"auth", "batch", "internal/httpapi", "internal/loop", "internal/peer", "limit", "node/edge", "node/handoff", "node/pause", "node/quorum", "node/replica", "node/room", "node/webhook", "protocol", "ring"},
		"internal/proc":        {"internal/wait", "protocol"},
		"internal/testcluster": {"internal/wait", "node", "ring", "router"},
		"ring/ringtest":        {"ring"},
	}
	const module = "github.com/roost-dev/roost/"
	var pkgs []string
	for p := range allowed {
		pkgs = append(pkgs, "../"+p)
	}
	out, err := exec.Command("go", append([]string{"list", "-f", "{{.ImportPath}}:{{join .Imports \" \"}}"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		pkg = strings.TrimPrefix(pkg, module)
		for _, imp := range strings.Fields(imports) {
			if dep, ok := strings.CutPrefix(imp, module); ok && !slices.Contains(allowed[pkg], dep) {
				t.Errorf("%s imports %s, which the code map does not allow (README, Code map)", pkg, dep)
			}
		}
	}
	deps, err := exec.Command("go", "list", "-deps", "../cmd/roost").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	if slices.Contains(strings.Fields(string(deps)), "testing") {
		t.Error("the server binary links package testing")
	}
}
