// Command chartcheck validates what `helm template` rendered, offline: every object is decoded
// strictly (unknown or duplicate fields, wrong case, wrong types are errors, as the API server's
// strict field validation makes them) into the official Go type of its apiVersion and kind, and
// the objects are then checked against each other and against what the gateway needs (selectors
// that match the pods, ports that exist, probes, the drain inside the termination grace period).
//
//	chartcheck [-gateway-config DIR] FILE...
//
// FILE: a multi-document YAML file; exit 1 on any problem. With -gateway-config, what the
// gateway would be started with (the ConfigMap's TOML and the container's environment, a Secret's
// value as "secret") goes to DIR/<FILE's base name>.json, for load_config.py to load as the
// gateway does.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The kinds the chart renders, each with the Go type the API server decodes it into. A kind not
// listed is an error: a new template needs its type here first.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
}

// Object is one decoded document.
type Object struct {
	Key  string // apiVersion/kind
	Name string
	Obj  any
}

func main() {
	configDir := flag.String("gateway-config", "", "write the gateway's config and environment here")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: chartcheck [-gateway-config DIR] FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range flag.Args() {
		data, err := os.ReadFile(path)
		if err == nil {
			var objs []Object
			objs, err = Decode(data)
			if err == nil {
				err = Check(objs)
			}
			if err == nil && *configDir != "" {
				base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
				err = writeGatewayConfig(objs, filepath.Join(*configDir, base+".json"))
			}
			if err == nil {
				fmt.Printf("%s: %d objects valid:", path, len(objs))
				for _, o := range objs {
					fmt.Printf(" %s/%s", o.Key[strings.LastIndexByte(o.Key, '/')+1:], o.Name)
				}
				fmt.Println()
			}
		}
		if err != nil {
			failed = true
			fmt.Fprintf(os.Stderr, "%s:\n%v\n", path, err)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// Decode splits a multi-document YAML stream and decodes each document strictly.
func Decode(data []byte) ([]Object, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []Object
	var errs []error
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		obj, err := decodeOne(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i, err))
			continue
		}
		if obj != nil {
			objs = append(objs, *obj)
		}
	}
	return objs, errors.Join(errs...)
}

func decodeOne(doc []byte) (*Object, error) {
	// Duplicate keys are an error here too (YAMLToJSONStrict), before JSON would keep the last.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	if string(bytes.TrimSpace(js)) == "null" { // a document of comments only
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return nil, err
	}
	key := tm.APIVersion + "/" + tm.Kind
	newObj, ok := kinds[key]
	if !ok {
		return nil, fmt.Errorf("%s: not a kind this check knows", key)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", key, errors.Join(strict...))
	}
	meta, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%s: no object metadata", key)
	}
	return &Object{Key: key, Name: meta.GetName(), Obj: obj}, nil
}

// Check holds the decoded objects to what the API server would refuse outright (names, labels,
// required fields the types cannot express) and to what would deploy but not work.
func Check(objs []Object) error {
	var errs []error
	fail := func(o Object, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s %s: %s", o.Key, o.Name, fmt.Sprintf(format, args...)))
	}
	var deploy *appsv1.Deployment
	services := map[string]*corev1.Service{}
	seen := map[string]bool{}
	for _, o := range objs {
		meta := o.Obj.(metav1.Object)
		id := o.Key + "/" + o.Name
		if seen[id] {
			fail(o, "rendered twice")
		}
		seen[id] = true
		for _, msg := range validation.IsDNS1123Subdomain(o.Name) {
			fail(o, "name: %s", msg)
		}
		checkLabels(meta.GetLabels(), func(msg string) { fail(o, "label %s", msg) })
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			deploy = v
		case *corev1.Service:
			// A Service's name is a DNS label (it becomes one in the cluster's DNS).
			for _, msg := range validation.IsDNS1035Label(o.Name) {
				fail(o, "Service name: %s", msg)
			}
			services[o.Name] = v
		}
	}
	if deploy == nil {
		return errors.Join(append(errs, errors.New("no Deployment rendered"))...)
	}
	pod := deploy.Spec.Template
	dep := Object{Key: "apps/v1/Deployment", Name: deploy.Name}
	checkDeployment(deploy, func(format string, args ...any) { fail(dep, format, args...) })
	podLabels := labels.Set(pod.Labels)
	containerPorts := map[string]int32{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			containerPorts[p.Name] = p.ContainerPort
		}
	}
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *corev1.Service:
			if len(v.Spec.Selector) == 0 || !labels.SelectorFromSet(v.Spec.Selector).Matches(podLabels) {
				fail(o, "selector %v does not select the Deployment's pods", v.Spec.Selector)
			}
			for _, p := range v.Spec.Ports {
				if p.TargetPort.StrVal != "" {
					if _, ok := containerPorts[p.TargetPort.StrVal]; !ok {
						fail(o, "targetPort %q is no container port", p.TargetPort.StrVal)
					}
				}
				if p.AppProtocol == nil {
					fail(o, "port %s has no appProtocol", p.Name)
				}
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := v.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != deploy.Name {
				fail(o, "scaleTargetRef %+v is not the Deployment", ref)
			}
			if v.Spec.MinReplicas == nil || *v.Spec.MinReplicas < 1 || v.Spec.MaxReplicas < *v.Spec.MinReplicas {
				fail(o, "replicas: min %v, max %d", v.Spec.MinReplicas, v.Spec.MaxReplicas)
			}
			if deploy.Spec.Replicas != nil {
				fail(o, "the Deployment sets replicas too: every apply would undo the HPA's count")
			}
			for _, c := range pod.Spec.Containers {
				if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
					fail(o, "container %s has no CPU request to measure utilisation against", c.Name)
				}
			}
		case *policyv1.PodDisruptionBudget:
			checkSelects(v.Spec.Selector, podLabels, func(msg string) { fail(o, "%s", msg) })
			if (v.Spec.MaxUnavailable == nil) == (v.Spec.MinAvailable == nil) {
				fail(o, "exactly one of maxUnavailable and minAvailable")
			}
		case *networkingv1.NetworkPolicy:
			checkSelects(&v.Spec.PodSelector, podLabels, func(msg string) { fail(o, "%s", msg) })
			for _, rule := range v.Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port != nil && p.Port.StrVal != "" {
						if _, ok := containerPorts[p.Port.StrVal]; !ok {
							fail(o, "port %q is no container port", p.Port.StrVal)
						}
					}
				}
			}
		case *monitoringv1.ServiceMonitor:
			checkServiceMonitor(v, services, func(msg string) { fail(o, "%s", msg) })
		}
	}
	return errors.Join(errs...)
}

func checkLabels(set map[string]string, fail func(string)) {
	for k, v := range set {
		for _, msg := range validation.IsQualifiedName(k) {
			fail(fmt.Sprintf("key %q: %s", k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			fail(fmt.Sprintf("%s=%q: %s", k, v, msg))
		}
	}
}

func checkSelects(sel *metav1.LabelSelector, pod labels.Set, fail func(string)) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	switch {
	case err != nil:
		fail(err.Error())
	case s.Empty() || !s.Matches(pod):
		fail(fmt.Sprintf("selector %v does not select the Deployment's pods", sel))
	}
}

func checkDeployment(d *appsv1.Deployment, fail func(string, ...any)) {
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)
	checkLabels(pod.Labels, func(msg string) { fail("pod label %s", msg) })
	checkSelects(d.Spec.Selector, podLabels, func(msg string) { fail("%s", msg) })
	if len(pod.Spec.Containers) == 0 {
		fail("no containers")
	}
	volumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = true
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == "" || c.Image == "" {
			fail("a container needs a name and an image")
		}
		ports := map[int32]bool{}
		for _, p := range c.Ports {
			ports[p.ContainerPort] = true
			if p.Name == "" || len(p.Name) > 15 {
				fail("container port %d: a name of 1-15 characters", p.ContainerPort)
			}
		}
		probes := map[string]*corev1.Probe{
			"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe,
		}
		for name, p := range probes {
			switch {
			case p == nil:
				fail("container %s: no %s probe", c.Name, name)
			case p.GRPC == nil:
				fail("container %s: the %s probe is not the gRPC health check", c.Name, name)
			case !ports[p.GRPC.Port]:
				fail("container %s: the %s probe's port %d is not a container port", c.Name, name, p.GRPC.Port)
			case p.GRPC.Service == nil:
				fail("container %s: the %s probe names no health service", c.Name, name)
			}
		}
		if c.Resources.Requests == nil || c.Resources.Limits == nil {
			fail("container %s: resource requests and limits", c.Name)
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			fail("container %s: the root filesystem is not read-only", c.Name)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			fail("container %s: privilege escalation allowed", c.Name)
		}
		nonRoot := pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.RunAsNonRoot != nil &&
			*pod.Spec.SecurityContext.RunAsNonRoot
		if sc != nil && sc.RunAsNonRoot != nil {
			nonRoot = *sc.RunAsNonRoot
		}
		if !nonRoot {
			fail("container %s: may run as root", c.Name)
		}
		mounted := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				fail("container %s: volume mount %s has no volume", c.Name, m.Name)
			}
			mounted[m.MountPath] = true
		}
		if !mounted["/tmp"] {
			fail("container %s: nothing writable at /tmp under a read-only root", c.Name)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			if _, dup := env[e.Name]; dup {
				fail("container %s: env %s given twice", c.Name, e.Name)
			}
			env[e.Name] = e.Value
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if ref.Name == "" || ref.Key == "" {
					fail("container %s: env %s names no Secret or key", c.Name, e.Name)
				}
			}
		}
		checkGrace(pod.Spec.TerminationGracePeriodSeconds, env, func(msg string) { fail("container %s: %s", c.Name, msg) })
	}
	for _, t := range pod.Spec.TopologySpreadConstraints {
		checkSelects(t.LabelSelector, podLabels, func(msg string) { fail("topology spread over %s: %s", t.TopologyKey, msg) })
	}
}

// The gateway drains for server.drain_delay_s + server.grace_s after SIGTERM; the kubelet's
// SIGKILL must come later.
func checkGrace(grace *int64, env map[string]string, fail func(string)) {
	var drain float64
	for _, name := range []string{"LONGREAD_SERVER__DRAIN_DELAY_S", "LONGREAD_SERVER__GRACE_S"} {
		v, err := strconv.ParseFloat(env[name], 64)
		if err != nil {
			fail(fmt.Sprintf("%s=%q is not a number of seconds", name, env[name]))
			return
		}
		drain += v
	}
	if grace == nil || float64(*grace) <= drain {
		fail(fmt.Sprintf("terminationGracePeriodSeconds %v is not above the drain's %gs", grace, drain))
	}
}

func checkServiceMonitor(sm *monitoringv1.ServiceMonitor, services map[string]*corev1.Service, fail func(string)) {
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		fail(err.Error())
		return
	}
	for _, ep := range sm.Spec.Endpoints {
		found := false
		for _, svc := range services {
			if !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			for _, p := range svc.Spec.Ports {
				if ep.Port != "" && p.Name == ep.Port {
					found = true
				}
			}
		}
		if !found {
			fail(fmt.Sprintf("endpoint port %q is on no Service it selects", ep.Port))
		}
	}
}

// GatewayConfig is what the gateway would be started with.
type GatewayConfig struct {
	TOML string            `json:"toml"`
	Env  map[string]string `json:"env"`
	// The health service each probe asks about, by probe (startup, readiness, liveness).
	Probes map[string]string `json:"probes"`
}

func writeGatewayConfig(objs []Object, path string) error {
	var out GatewayConfig
	configMaps := map[string]*corev1.ConfigMap{}
	var deploy *appsv1.Deployment
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *corev1.ConfigMap:
			configMaps[v.Name] = v
		case *appsv1.Deployment:
			deploy = v
		}
	}
	pod := deploy.Spec.Template.Spec
	c := pod.Containers[0]
	out.Probes = map[string]string{}
	for name, p := range map[string]*corev1.Probe{
		"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe,
	} {
		out.Probes[name] = *p.GRPC.Service // Check has made sure each is a gRPC probe with one
	}
	out.Env = map[string]string{}
	for _, e := range c.Env {
		out.Env[e.Name] = e.Value
		if e.ValueFrom != nil {
			out.Env[e.Name] = "secret"
		}
	}
	// The file the container is told to read, found through its mount and volume.
	configPath := ""
	for i, a := range c.Args {
		if a == "--config" && i+1 < len(c.Args) {
			configPath = c.Args[i+1]
		}
	}
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(configPath, m.MountPath+"/") {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && configMaps[v.ConfigMap.Name] != nil {
				key := strings.TrimPrefix(configPath, m.MountPath+"/")
				toml, ok := configMaps[v.ConfigMap.Name].Data[key]
				if !ok {
					return fmt.Errorf("ConfigMap %s has no key %s", v.ConfigMap.Name, key)
				}
				out.TOML = toml
			}
		}
	}
	if configPath == "" || out.TOML == "" {
		return fmt.Errorf("the container's --config %q is not a rendered ConfigMap's key", configPath)
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
