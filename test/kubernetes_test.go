package test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/roost-dev/roost/internal/proc"
)

const kubeDir = "../deploy/kubernetes"

// kubeManifests is every object of deploy/kubernetes, decoded strictly into the upstream API types.
type kubeManifests struct {
	services     []*corev1.Service
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	pdbs         []*policyv1.PodDisruptionBudget
	secrets      []*corev1.Secret
}

// TestKubernetesManifests: every manifest in deploy/kubernetes decodes into k8s.io/api's types with
// unknown and duplicate fields rejected, kustomization.yaml lists exactly the other files, every
// --flag and ROOST_* variable given to a container is one the built binary's command takes,
// selectors select the pods they are meant for, probes, Services and scrape annotations hit ports
// the container declares and the process really listens on, and the grace period covers the
// preStop sleep, --drain-timeout and --shutdown-timeout.
func TestKubernetesManifests(t *testing.T) {
	bin := proc.Roost(t)
	k := loadKube(t)
	if len(k.statefulSets)+len(k.deployments) == 0 || len(k.services) == 0 {
		t.Fatalf("found no workload or no Service in %s", kubeDir)
	}
	help := map[string]map[string]string{} // command → flag → default
	flagsOf := func(cmd string) map[string]string {
		if help[cmd] == nil {
			help[cmd] = binaryFlags(t, bin, cmd)
		}
		return help[cmd]
	}

	type workload struct {
		kind, name string
		selector   *metav1.LabelSelector
		pod        corev1.PodTemplateSpec
	}
	var workloads []workload
	for _, s := range k.statefulSets {
		workloads = append(workloads, workload{"StatefulSet", s.Name, s.Spec.Selector, s.Spec.Template})
		if !slices.ContainsFunc(k.services, func(svc *corev1.Service) bool {
			return svc.Name == s.Spec.ServiceName && svc.Spec.ClusterIP == corev1.ClusterIPNone
		}) {
			t.Errorf("StatefulSet %s: serviceName %q is no headless Service here", s.Name, s.Spec.ServiceName)
		}
	}
	for _, d := range k.deployments {
		workloads = append(workloads, workload{"Deployment", d.Name, d.Spec.Selector, d.Spec.Template})
	}

	for _, w := range workloads {
		what := w.kind + " " + w.name
		if w.selector == nil || len(w.selector.MatchLabels) == 0 || len(w.selector.MatchExpressions) != 0 {
			t.Errorf("%s: want a selector of matchLabels only, got %+v", what, w.selector)
		} else if !subset(w.selector.MatchLabels, w.pod.Labels) {
			t.Errorf("%s: selector %v does not match its pod labels %v", what, w.selector.MatchLabels, w.pod.Labels)
		}
		if len(w.pod.Spec.Containers) != 1 {
			t.Fatalf("%s: want one container, got %d", what, len(w.pod.Spec.Containers))
		}
		c := w.pod.Spec.Containers[0]
		if len(c.Args) == 0 || strings.HasPrefix(c.Args[0], "-") {
			t.Fatalf("%s: args %q do not start with a roost command", what, c.Args)
		}
		cmd := c.Args[0]
		known := flagsOf(cmd)
		given := map[string]string{}
		for _, a := range c.Args[1:] {
			name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !strings.HasPrefix(a, "--") || !ok {
				t.Errorf("%s: argument %q: want --flag=value", what, a)
				continue
			}
			if _, ok := known[name]; !ok {
				t.Errorf("%s: roost %s has no flag --%s", what, cmd, name)
			}
			given[name] = value
		}
		for _, e := range c.Env {
			if name, ok := strings.CutPrefix(e.Name, "ROOST_"); ok {
				flag := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
				if _, ok := known[flag]; !ok {
					t.Errorf("%s: env %s names no flag of roost %s (--%s)", what, e.Name, cmd, flag)
				}
			}
		}
		setting := func(flag string) string {
			if v, ok := given[flag]; ok {
				return v
			}
			return known[flag]
		}

		// Ports: what the process listens on is what the container declares.
		ports := map[string]int32{} // name → container port
		numbers := map[int32]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
			numbers[p.ContainerPort] = true
		}
		listens := map[string]string{"http": setting("http"), "gossip-tcp": setting("gossip"), "gossip-udp": setting("gossip")}
		if _, ok := known["tcp"]; ok {
			listens["ingest"] = setting("tcp")
		}
		for name, addr := range listens {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Errorf("%s: %s listener %q: %v", what, name, addr, err)
				continue
			}
			if want, ok := ports[name]; !ok || strconv.Itoa(int(want)) != port {
				t.Errorf("%s: the process listens for %s on %s, the container declares %s as %d", what, name, port, name, want)
			}
		}
		resolve := func(p intstr.IntOrString) (int32, bool) {
			if p.Type == intstr.String {
				n, ok := ports[p.StrVal]
				return n, ok
			}
			return p.IntVal, numbers[p.IntVal]
		}
		for probeName, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if pr == nil || pr.HTTPGet == nil {
				t.Errorf("%s: want an HTTP %s probe", what, probeName)
				continue
			}
			if n, ok := resolve(pr.HTTPGet.Port); !ok || n != ports["http"] {
				t.Errorf("%s: %s probe port %s is not the HTTP listener's (%d)", what, probeName, pr.HTTPGet.Port.String(), ports["http"])
			}
			if want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[probeName]; pr.HTTPGet.Path != want {
				t.Errorf("%s: %s probe path %q, want %s", what, probeName, pr.HTTPGet.Path, want)
			}
		}
		if p, ok := w.pod.Annotations["prometheus.io/port"]; ok && p != strconv.Itoa(int(ports["http"])) {
			t.Errorf("%s: prometheus.io/port %s is not the HTTP listener's (%d), which serves /metrics", what, p, ports["http"])
		}

		// Grace: the preStop sleep, then the drain, then the rest of the shutdown.
		var need time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			need += time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		for _, flag := range []string{"drain-timeout", "shutdown-timeout"} {
			if _, ok := known[flag]; !ok {
				continue // routers do not drain
			}
			d, err := time.ParseDuration(setting(flag))
			if err != nil {
				t.Fatalf("%s: --%s %q: %v", what, flag, setting(flag), err)
			}
			need += d
		}
		grace := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
		if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if grace < need {
			t.Errorf("%s: terminationGracePeriodSeconds %s < preStop + --drain-timeout + --shutdown-timeout = %s", what, grace, need)
		}
		t.Logf("%s: roost %s, %d flags known to the binary, grace %s covers %s", what, cmd, len(given), grace, need)

		// Every Service and disruption budget meant for these pods selects them, and a Service's
		// ports reach ports the container declares.
		for _, svc := range k.services {
			if len(svc.Spec.Selector) == 0 || !subset(svc.Spec.Selector, w.pod.Labels) {
				continue
			}
			for _, p := range svc.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(p.Port) // unset: the port itself
				}
				n, ok := resolve(target)
				if !ok {
					t.Errorf("Service %s port %s: target %s is no port of %s", svc.Name, p.Name, target.String(), what)
					continue
				}
				if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
					return cp.ContainerPort == n && protocolOf(cp.Protocol) == protocolOf(p.Protocol)
				}) {
					t.Errorf("Service %s port %s: %s has no %s port %d", svc.Name, p.Name, what, protocolOf(p.Protocol), n)
				}
			}
		}
	}
	for _, svc := range k.services {
		if !slices.ContainsFunc(workloads, func(w workload) bool { return subset(svc.Spec.Selector, w.pod.Labels) }) {
			t.Errorf("Service %s: selector %v selects no pod of these manifests", svc.Name, svc.Spec.Selector)
		}
	}
	for _, pdb := range k.pdbs {
		if pdb.Spec.Selector == nil || !slices.ContainsFunc(workloads, func(w workload) bool { return subset(pdb.Spec.Selector.MatchLabels, w.pod.Labels) }) {
			t.Errorf("PodDisruptionBudget %s: selector %v selects no pod of these manifests", pdb.Name, pdb.Spec.Selector)
		}
	}
	for _, w := range workloads {
		for _, e := range w.pod.Spec.Containers[0].Env {
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
				if !slices.ContainsFunc(k.secrets, func(s *corev1.Secret) bool {
					_, a := s.StringData[ref.SecretKeyRef.Key]
					_, b := s.Data[ref.SecretKeyRef.Key]
					return s.Name == ref.SecretKeyRef.Name && (a || b)
				}) {
					t.Errorf("%s %s: env %s reads secret %s key %s, which these manifests do not define", w.kind, w.name, e.Name, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
				}
			}
		}
	}
}

// TestKubernetesDecodeIsStrict: the decoder the manifest test relies on refuses what a typo
// would produce, so a clean decode means something.
func TestKubernetesDecodeIsStrict(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}}\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: None, clusterIP: None}\n",
		"wrong type":      "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: http}]}\n",
		"unknown kind":    "apiVersion: v1\nkind: Servce\nmetadata: {name: x}\n",
	} {
		if err := decodeKube(&kubeManifests{}, []byte(doc)); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}

func loadKube(t *testing.T) *kubeManifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubeDir, err)
	}
	k := &kubeManifests{}
	var listed []string
	var others []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			var kz struct {
				Resources []string `json:"resources"`
			}
			if err := yaml.UnmarshalStrict(b, &kz); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			listed = kz.Resources
			continue
		}
		others = append(others, filepath.Base(f))
		for i, doc := range splitYAML(b) {
			if err := decodeKube(k, doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	slices.Sort(listed)
	if !slices.Equal(listed, others) {
		t.Errorf("kustomization.yaml lists %v, the directory has %v", listed, others)
	}
	return k
}

// splitYAML cuts a file at its "---" lines into documents, leaving out the empty ones.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) != "" {
			docs = append(docs, []byte(doc))
		}
	}
	return docs
}

// appendNew appends a new, empty T to list and returns it, for a document to decode into.
func appendNew[T any](list *[]*T) *T {
	o := new(T)
	*list = append(*list, o)
	return o
}

// decodeKube decodes one document strictly into the type its apiVersion and kind name.
func decodeKube(k *kubeManifests, doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Service":
		obj = appendNew(&k.services)
	case "v1 Secret":
		obj = appendNew(&k.secrets)
	case "apps/v1 StatefulSet":
		obj = appendNew(&k.statefulSets)
	case "apps/v1 Deployment":
		obj = appendNew(&k.deployments)
	case "policy/v1 PodDisruptionBudget":
		obj = appendNew(&k.pdbs)
	default:
		return fmt.Errorf("apiVersion %q kind %q: not a type this test knows", tm.APIVersion, tm.Kind)
	}
	return yaml.UnmarshalStrict(doc, obj)
}

// binaryFlags runs roost cmd --help and returns its flags with their defaults ("" for none).
func binaryFlags(t *testing.T, bin, cmd string) map[string]string {
	t.Helper()
	out, err := exec.Command(bin, cmd, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("roost %s --help: %v\n%s", cmd, err, out)
	}
	flags := map[string]string{}
	name := ""
	def := regexp.MustCompile(`\(default "?([^")]*)"?\)\s*$`)
	for _, line := range bytes.Split(out, []byte("\n")) {
		s := string(line)
		if strings.HasPrefix(s, "  -") {
			name = strings.Fields(strings.TrimPrefix(s, "  -"))[0]
			flags[name] = ""
		} else if m := def.FindStringSubmatch(s); m != nil && name != "" {
			flags[name] = m[1]
		}
	}
	if len(flags) < 10 {
		t.Fatalf("roost %s --help lists %d flags:\n%s", cmd, len(flags), out)
	}
	return flags
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func protocolOf(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// TestKubernetesArgsRun: the arguments each manifest gives its container start the built binary
// as they are (every value parsed, none refused), and the process answers its readiness and
// liveness probes' paths with 200 on its HTTP listener. Only what a pod's environment decides is
// replaced: the listeners move to free loopback ports and the router joins the node started here
// instead of the Service's DNS name.
func TestKubernetesArgsRun(t *testing.T) {
	bin := proc.Roost(t)
	k := loadKube(t)
	var pods []corev1.PodTemplateSpec
	for _, s := range k.statefulSets {
		pods = append(pods, s.Spec.Template)
	}
	for _, d := range k.deployments {
		pods = append(pods, d.Spec.Template)
	}
	// Nodes first: the routers join one.
	slices.SortStableFunc(pods, func(a, b corev1.PodTemplateSpec) int {
		return strings.Compare(a.Spec.Containers[0].Args[0], b.Spec.Containers[0].Args[0])
	})
	set := map[string]bool{"id": true, "gossip": true, "advertise": true, "http": true, "tcp": true, "join": true}
	seed := ""
	for _, pod := range pods {
		c := pod.Spec.Containers[0]
		cmd := c.Args[0]
		var args []string
		for _, a := range c.Args[1:] {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !set[name] {
				args = append(args, a)
			}
		}
		if cmd == "router" && seed == "" {
			t.Fatalf("roost router: no node started for it to join (manifests: %v)", c.Args)
		}
		p := proc.StartT(t, proc.Spec{Binary: bin, Role: cmd, ID: "k8s-" + cmd, Join: seed, Args: args, Ready: c.ReadinessProbe.HTTPGet.Path})
		if cmd == "node" {
			seed = p.Gossip
		}
		for name, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + p.HTTP + pr.HTTPGet.Path)
			if err != nil {
				t.Errorf("roost %s %s: %s probe %s: %v", cmd, args, name, pr.HTTPGet.Path, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("roost %s %s: %s probe %s answered %d", cmd, args, name, pr.HTTPGet.Path, resp.StatusCode)
			}
		}
		t.Logf("roost %s %s: up, probes answered 200", cmd, strings.Join(args, " "))
	}
}
