package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/coordinator-dev/coordinator/integration/harness"
)

const kubeDir = "../../deploy/kubernetes"

// kubeObjects decodes every object of deploy/kubernetes strictly with the
// Kubernetes API types: an unknown or repeated field, or a kind the
// scheme does not know, fails the test. kustomization.yaml is checked to
// list every other file.
func kubeObjects(t *testing.T) []runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubeDir, err)
	}
	var objs []runtime.Object
	var listed []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			var k struct {
				APIVersion string   `json:"apiVersion"`
				Kind       string   `json:"kind"`
				Resources  []string `json:"resources"`
			}
			if err := sigsyaml.UnmarshalStrict(data, &k); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			listed = k.Resources
			continue
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			if len(bytes.TrimSpace([]byte(stripComments(doc)))) == 0 {
				continue
			}
			obj, _, err := dec.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s, document %d: %v", f, i+1, err)
			}
			objs = append(objs, obj)
		}
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(listed, b) {
			t.Errorf("kustomization.yaml does not list %s", b)
		}
	}
	return objs
}

// stripComments drops the comment lines of a YAML document.
func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// The strict decoding refuses a field the API types do not have.
func TestKubernetesDecodingIsStrict(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	bad := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: {}\ndatta: {}\n"
	if _, _, err := dec.Decode([]byte(bad), nil, nil); err == nil {
		t.Error("a ConfigMap with an unknown field decoded")
	}
}

// TestKubernetesManifests: three nodes with anti-affinity, a restrictive
// securityContext, etcd TLS from a Secret, settings from a ConfigMap,
// probes with their meanings, the API Service, the metrics port, a
// PodDisruptionBudget; and the container's arguments and environment are
// ones the binary accepts.
func TestKubernetesManifests(t *testing.T) {
	var (
		sts      *appsv1.StatefulSet
		services = map[string]*corev1.Service{}
		cms      = map[string]*corev1.ConfigMap{}
		pdb      *policyv1.PodDisruptionBudget
	)
	for _, obj := range kubeObjects(t) {
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			sts = o
		case *corev1.Service:
			services[o.Name] = o
		case *corev1.ConfigMap:
			cms[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			pdb = o
		default:
			t.Errorf("unexpected object %T", obj)
		}
	}
	if sts == nil || pdb == nil || len(services) == 0 || len(cms) == 0 {
		t.Fatalf("want a StatefulSet, Services, a ConfigMap and a PodDisruptionBudget; got %v, %v, %v, %v", sts != nil, len(services), len(cms), pdb != nil)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", sts.Spec.Replicas)
	}
	labels := sts.Spec.Template.Labels
	for k, v := range sts.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("the StatefulSet's selector %s=%s does not select its pods (%v)", k, v, labels)
		}
	}
	selects := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels) || (pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil) {
		t.Errorf("the PodDisruptionBudget does not bound the nodes' disruptions: %+v", pdb.Spec)
	}
	pod := sts.Spec.Template.Spec
	if a := pod.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) == 0 ||
		a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("no anti-affinity by host: %+v", pod.Affinity)
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("the pod may run as root: %+v", pod.SecurityContext)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("the container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("the container's root file system is writable")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("the container allows privilege escalation")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
		t.Errorf("the container keeps capabilities: %+v", sc.Capabilities)
	}

	// Ports, Services and probes.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["api"] == 0 || ports["metrics"] == 0 {
		t.Errorf("container ports %v, want api and metrics", ports)
	}
	servesPort := map[string]bool{}
	for name, svc := range services {
		if !selects(svc.Spec.Selector) {
			t.Errorf("Service %s does not select the nodes", name)
		}
		for _, p := range svc.Spec.Ports {
			if ports[p.TargetPort.StrVal] == 0 {
				t.Errorf("Service %s targets port %q, which the container does not name", name, p.TargetPort.StrVal)
			}
			servesPort[p.TargetPort.StrVal] = true
		}
	}
	if !servesPort["api"] || !servesPort["metrics"] {
		t.Errorf("Services expose %v, want api and metrics", servesPort)
	}
	if sts.Spec.ServiceName == "" || services[sts.Spec.ServiceName] == nil {
		t.Errorf("the StatefulSet's serviceName %q is none of the Services", sts.Spec.ServiceName)
	}
	for name, want := range map[string]struct {
		p    *corev1.Probe
		path string
	}{
		"liveness":  {c.LivenessProbe, "/livez"},
		"readiness": {c.ReadinessProbe, "/readyz/api"},
		"startup":   {c.StartupProbe, "/livez"},
	} {
		if want.p == nil || want.p.HTTPGet == nil || want.p.HTTPGet.Path != want.path || want.p.HTTPGet.Port.StrVal != "metrics" {
			t.Errorf("%s probe = %+v, want GET %s on port metrics", name, want.p, want.path)
		}
	}

	// Settings: the ConfigMap through envFrom, the certificates' paths in
	// env, each under the mount of its Secret.
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil || cms[ef.ConfigMapRef.Name] == nil {
			t.Fatalf("envFrom %+v names no ConfigMap of the manifests", ef)
		}
		for k, v := range cms[ef.ConfigMapRef.Name].Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = sts.Name + "-0"
		case e.ValueFrom != nil:
			t.Errorf("env %s comes from %+v", e.Name, e.ValueFrom)
		default:
			env[e.Name] = e.Value
		}
	}
	secretMounts := map[string]string{} // mount path -> secret
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				secretMounts[m.MountPath] = v.Secret.SecretName
			}
		}
	}
	for _, k := range []string{"COORDINATOR_CACERT", "COORDINATOR_CERT", "COORDINATOR_KEY"} {
		if secretMounts[filepath.Dir(env[k])] == "" {
			t.Errorf("%s=%q is not in a mounted Secret (%v)", k, env[k], secretMounts)
		}
	}
	if !strings.HasPrefix(env["COORDINATOR_ENDPOINTS"], "https://") {
		t.Errorf("COORDINATOR_ENDPOINTS=%q: etcd without TLS", env["COORDINATOR_ENDPOINTS"])
	}

	// The binary accepts the arguments and every variable, with its
	// value: each variable is given as its flag (serve --help names the
	// variable of each), and --help runs only when every flag parses.
	help, errOut, code := harness.Run(t, nil, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d: %s", code, errOut)
	}
	args := slices.Clone(c.Args)
	if len(c.Command) > 0 || len(args) == 0 || args[0] != "serve" {
		t.Fatalf("command %q args %q, want the image's entrypoint with serve", c.Command, c.Args)
	}
	for k, v := range env {
		if !strings.HasPrefix(k, "COORDINATOR_") {
			continue
		}
		if !strings.Contains(help, "[$"+k+"]") {
			t.Errorf("%s is set, but no flag of serve reads it", k)
			continue
		}
		args = append(args, "--"+strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "COORDINATOR_")), "_", "-")+"="+v)
	}
	if out, errOut, code := harness.Run(t, nil, append(args, "--help")...); code != 0 {
		t.Errorf("coordinator %q: exit %d\n%s%s", args, code, out, errOut)
	}
}
