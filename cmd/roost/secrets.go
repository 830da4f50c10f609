package main

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/node/room"
)

// minSecret is the shortest cluster secret a member takes, in bytes.
const minSecret = 16

// makeSecret is the hint every refusal of a secret ends with.
const makeSecret = `make one with: head -c 32 /dev/urandom | base64`

// placeholders are the secrets deploy/ ships with (deploy/compose.yaml,
// deploy/kubernetes/secret.yaml) and words any placeholder of theirs would contain: a member
// refuses them, so a cluster cannot run on a secret everyone has read.
var placeholders = []string{"change-me", "changeme", "replace-me", "replaceme", "placeholder", "your-secret", "secret-here"}

// secretFlags are the flags that take a cluster secret.
var secretFlags = []string{"cluster-secret", "cluster-secret-file", "cluster-secret-accept"}

// checkSecrets refuses what would leave a member open without saying so, or guarded by a
// secret anyone could guess: a secret flag given an explicitly empty value (ROOST_CLUSTER_SECRET=
// included), a placeholder from deploy/, a secret under 16 bytes, and client auth without a
// cluster secret (node-to-node calls would go unsigned: anyone could forge a hand-off and put
// words in any user's mouth, or join the gossip and read every room). Call it once the flags are
// parsed and loaded.
func (m *member) checkSecrets(fs *flag.FlagSet) error {
	given := map[string]bool{} // on the command line or, through parse, from the environment
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, name := range secretFlags {
		f := fs.Lookup(name)
		if f == nil || !given[name] || strings.TrimSpace(f.Value.String()) != "" {
			continue
		}
		if v, ok := os.LookupEnv(envName(name)); ok && strings.TrimSpace(v) == "" {
			return fmt.Errorf("%s is set but empty: set it to a real secret (at least %d bytes; %s), or unset it to run open", envName(name), minSecret, makeSecret)
		}
		return fmt.Errorf("--%s is given but empty: give a real secret (at least %d bytes; %s), or leave the flag out to run open", name, minSecret, makeSecret)
	}
	if err := checkSecret("the cluster secret (--cluster-secret)", m.secret); err != nil {
		return err
	}
	if err := checkSecret("--cluster-secret-accept", m.secretAccept); err != nil {
		return err
	}
	if m.auth != nil && m.secret == "" {
		return fmt.Errorf("client auth is on (--auth-hmac-secret, --auth-public-key or --auth-jwks) but --cluster-secret is not set: " +
			"node-to-node calls would go unsigned, so anyone who reaches a node could forge a hand-off with messages from any user, " +
			"or join the gossip and read every room; give every node and router the same --cluster-secret (or --cluster-secret-file), " + makeSecret)
	}
	return nil
}

// checkSecret refuses a non-empty secret that is a placeholder or too short; what names it.
func checkSecret(what, s string) error {
	if s == "" {
		return nil
	}
	lower := strings.ToLower(s)
	for _, p := range placeholders {
		if strings.Contains(lower, p) {
			return fmt.Errorf("%s is a placeholder (%q, as in deploy/): set a real one before running a cluster; %s", what, s, makeSecret)
		}
	}
	if len(s) < minSecret {
		return fmt.Errorf("%s is %d bytes: use at least %d random bytes; %s", what, len(s), minSecret, makeSecret)
	}
	return nil
}

// randomSecret is a fresh cluster secret, for a cluster that lives in one process (roost dev).
func randomSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// checkNodeFlags refuses node limits a hand-off could not carry to another node.
func checkNodeFlags(cfg *node.Config) error {
	if cfg.DedupeIDs > room.MaxIDs {
		return fmt.Errorf("--dedupe-ids %d: at most %d (a room's remembered ids must fit a hand-off)", cfg.DedupeIDs, room.MaxIDs)
	}
	return nil
}
