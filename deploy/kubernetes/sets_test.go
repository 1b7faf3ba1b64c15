package kubernetes_test

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/wire"
)

// stopMargin is what terminationGracePeriodSeconds must leave beyond the preStop hook's
// wait and shutdown_grace: taskd stops its workers after shutdown_grace (EOF, then
// SIGTERM, then SIGKILL, a few seconds at most) and exits.
const stopMargin = 5 * time.Second

// TestSets checks each set of manifests against itself, the Dockerfile and taskd, then
// runs its probes and preStop hook against a real taskd on its ConfigMap's config.
func TestSets(t *testing.T) {
	img := readDockerfile(t)
	for _, dir := range sets {
		t.Run(dir, func(t *testing.T) {
			s := loadSet(t, dir)
			p := checkPod(t, s, img)
			checkSelectors(t, s, p)
			t.Run("real taskd", func(t *testing.T) { runProbes(t, p) })
		})
	}
}

// podFacts is what checkPod found, for the other checks.
type podFacts struct {
	tmpl      *corev1.PodTemplateSpec
	taskd     *corev1.Container
	cfg       *config.Config
	rawConfig string
	env       []string // TASKD_* overrides that make cfg load here: the TLS files
	grace     time.Duration
	preStop   []string
	wait      time.Duration // the preStop hook's drain --wait
}

// checkPod checks the pod template: its config, volumes, probes, grace period and
// security settings.
func checkPod(t *testing.T, s *set, img image) *podFacts {
	tmpl, _, what := s.pod()
	spec := &tmpl.Spec
	p := &podFacts{tmpl: tmpl}
	i := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == "taskd" })
	require.GreaterOrEqual(t, i, 0, "%s has no container named taskd", what)
	c := &spec.Containers[i]
	p.taskd = c
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volume := func(mountPath string) *corev1.Volume {
		m, ok := mounts[mountPath]
		if !assert.True(t, ok, "%s: nothing is mounted at %s", what, mountPath) {
			return nil
		}
		j := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if !assert.GreaterOrEqual(t, j, 0, "%s: volume %q is mounted but not defined", what, m.Name) {
			return nil
		}
		return &spec.Volumes[j]
	}

	// The config: args -c PATH, PATH in a mounted ConfigMap of this set.
	assert.Empty(t, c.Command, "the image's ENTRYPOINT (%s) runs taskd; give only args", img.entrypoint)
	require.Len(t, c.Args, 2, "args: [-c, CONFIG]")
	require.Equal(t, "-c", c.Args[0])
	cfgPath := c.Args[1]
	v := volume(path.Dir(cfgPath))
	require.NotNil(t, v)
	require.NotNil(t, v.ConfigMap, "%s is not a ConfigMap volume", path.Dir(cfgPath))
	cm, ok := s.configMaps[v.ConfigMap.Name]
	require.True(t, ok, "ConfigMap %q is not in %s", v.ConfigMap.Name, s.dir)
	p.rawConfig, ok = cm.Data[path.Base(cfgPath)]
	require.True(t, ok, "ConfigMap %q has no key %q", cm.Name, path.Base(cfgPath))

	// The TLS files must be in a mounted Secret; here they are a test CA's.
	var raw struct {
		TLS config.TLS `yaml:"tls"`
	}
	require.NoError(t, yamlv3.Unmarshal([]byte(p.rawConfig), &raw))
	if raw.TLS.CertFile != "" {
		for _, f := range []string{raw.TLS.CertFile, raw.TLS.KeyFile, raw.TLS.ClientCAFile} {
			if f == "" {
				continue
			}
			if v := volume(path.Dir(f)); v != nil {
				assert.NotNil(t, v.Secret, "%s: the TLS file %s is not in a Secret volume", what, f)
			}
		}
		ca := taskdtest.NewCA(t, "k8s-test")
		cert, key := ca.Issue(t, taskdtest.Leaf{Name: "taskd", SANs: []string{"taskd.default.svc.cluster.local", "127.0.0.1"}})
		p.env = append(p.env, "TASKD_TLS_CERT_FILE="+cert, "TASKD_TLS_KEY_FILE="+key)
		if raw.TLS.ClientCAFile != "" {
			p.env = append(p.env, "TASKD_TLS_CLIENT_CA_FILE="+ca.CertFile)
		}
	}

	// taskd's own config loader, as taskd --check-config runs it.
	file := filepath.Join(t.TempDir(), "taskd.yaml")
	require.NoError(t, os.WriteFile(file, []byte(p.rawConfig), 0o600))
	cfg, err := config.Load(file, p.env)
	require.NoError(t, err, "the ConfigMap's %s does not load", path.Base(cfgPath))
	p.cfg = cfg

	// Every program the config runs is in the image.
	for name, in := range cfg.Interfaces {
		_, ok := imageFiles[in.Command[0]]
		assert.True(t, ok, "interface %s runs %s, which the image does not have (imageFiles)", name, in.Command[0])
	}

	// Listeners: the unix socket in a writable volume that TASKD_ADDR names; a tls://
	// port and the metrics port are container ports.
	ports := map[int32]string{}
	for _, cp := range c.Ports {
		ports[cp.ContainerPort] = cp.Name
	}
	envAddr := ""
	for _, e := range c.Env {
		if e.Name == "TASKD_ADDR" {
			envAddr = e.Value
		}
	}
	assert.Contains(t, cfg.Listen, envAddr, "TASKD_ADDR (what taskctl in the probes dials) is not one of taskd's listen addresses")
	for _, l := range cfg.Listen {
		a, err := wire.ParseAddr(l)
		require.NoError(t, err)
		switch a.Network {
		case "unix":
			dir := path.Dir(a.Address)
			if v := volume(dir); v != nil {
				assert.True(t, v.EmptyDir != nil || v.HostPath != nil, "%s: the socket's directory %s is not an emptyDir or hostPath", what, dir)
				assert.False(t, mounts[dir].ReadOnly, "the socket's directory %s is mounted read-only", dir)
			}
		case "tcp":
			require.True(t, a.TLS, "%s: plain tcp:// is loopback-only in taskd: pods need tls://", l)
			_, port, _ := strings.Cut(a.Address, ":")
			n, err := strconv.Atoi(port)
			require.NoError(t, err)
			assert.NotEmpty(t, ports[int32(n)], "%s: port %d is not a container port", what, n)
		}
	}
	if cfg.MetricsListen != "" {
		_, port, _ := strings.Cut(cfg.MetricsListen, ":")
		n, err := strconv.Atoi(port)
		require.NoError(t, err)
		assert.Equal(t, "metrics", ports[int32(n)], "metrics_listen's port is the container port named metrics")
		assert.Equal(t, port, tmpl.Annotations["prometheus.io/port"])
	}

	// Probes and hooks run taskctl from the image.
	require.NotNil(t, c.LivenessProbe, "liveness probe")
	require.NotNil(t, c.ReadinessProbe, "readiness probe")
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		want  string
	}{{"liveness", c.LivenessProbe, "ping"}, {"readiness", c.ReadinessProbe, "ready"}} {
		require.NotNil(t, pr.probe.Exec, "%s probe: exec taskctl", pr.name)
		cmd := pr.probe.Exec.Command
		assert.Equal(t, "/usr/local/bin/taskctl", cmd[0], "%s probe", pr.name)
		assert.Equal(t, pr.want, cmd[len(cmd)-1], "%s probe: taskctl %s", pr.name, pr.want)
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		require.NotNil(t, c.Lifecycle.PreStop.Exec, "preStop: exec taskctl")
		p.preStop = c.Lifecycle.PreStop.Exec.Command
		assert.Equal(t, "/usr/local/bin/taskctl", p.preStop[0])
		assert.Subset(t, p.preStop, []string{"drain", "--all", "--wait"})
		i := slices.Index(p.preStop, "--wait")
		p.wait, err = time.ParseDuration(p.preStop[i+1])
		require.NoError(t, err)
	}
	if s.deployment != nil {
		assert.NotEmpty(t, p.preStop, "a Deployment's pods drain in a preStop hook before SIGTERM, so that clients move to the other pods")
	}
	require.NotNil(t, spec.TerminationGracePeriodSeconds)
	p.grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	assert.Greater(t, p.grace, p.wait+cfg.ShutdownGrace+stopMargin,
		"terminationGracePeriodSeconds must be above the preStop wait (%v) + shutdown_grace (%v) + %v for the workers' stop", p.wait, cfg.ShutdownGrace, stopMargin)

	// Security: non-root as the image's user, read-only root, no privileges; resources.
	uid, _, _ := strings.Cut(img.user, ":")
	require.NotNil(t, spec.SecurityContext)
	if assert.NotNil(t, spec.SecurityContext.RunAsUser) {
		assert.Equal(t, uid, strconv.FormatInt(*spec.SecurityContext.RunAsUser, 10), "runAsUser is the image's USER")
	}
	assert.Equal(t, ptr(true), spec.SecurityContext.RunAsNonRoot)
	assert.Equal(t, ptr(false), spec.AutomountServiceAccountToken, "taskd does not use the Kubernetes API")
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		require.NotNil(t, sc, "container %s: securityContext", c.Name)
		assert.Equal(t, ptr(true), sc.ReadOnlyRootFilesystem, "container %s", c.Name)
		assert.Equal(t, ptr(false), sc.AllowPrivilegeEscalation, "container %s", c.Name)
		if assert.NotNil(t, sc.Capabilities, "container %s", c.Name) {
			assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "container %s", c.Name)
		}
		if c.Name == "taskd" {
			assert.True(t, sc.RunAsNonRoot == nil || *sc.RunAsNonRoot, "taskd runs as non-root")
			assert.Nil(t, sc.RunAsUser, "taskd runs as the pod's user")
			assert.Nil(t, sc.Capabilities.Add, "taskd needs no capability")
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
			assert.False(t, req.IsZero(), "container %s: requests.%s", c.Name, r)
			assert.False(t, lim.IsZero(), "container %s: limits.%s", c.Name, r)
			assert.LessOrEqual(t, req.Cmp(lim), 0, "container %s: requests.%s above limits", c.Name, r)
		}
	}
	return p
}

// checkSelectors checks that the workload, the Services and the PodDisruptionBudgets
// select the pods, and the Services' ports.
func checkSelectors(t *testing.T, s *set, p *podFacts) {
	_, sel, what := s.pod()
	podLabels := labels.Set(p.tmpl.Labels)
	matches := func(ls *metav1.LabelSelector) bool {
		selector, err := metav1.LabelSelectorAsSelector(ls)
		require.NoError(t, err)
		return !selector.Empty() && selector.Matches(podLabels)
	}
	assert.True(t, matches(sel), "%s: its selector does not match its pod template's labels", what)

	for _, svc := range s.services {
		assert.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP, "Service %s: headless (clusterIP: None), one DNS record per pod", svc.Name)
		assert.False(t, svc.Spec.PublishNotReadyAddresses, "Service %s: unready pods must leave the DNS records", svc.Name)
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		assert.True(t, len(svc.Spec.Selector) > 0 && sel.Matches(podLabels), "Service %s: selector %v does not match the pods' labels %v", svc.Name, svc.Spec.Selector, p.tmpl.Labels)
		for _, sp := range svc.Spec.Ports {
			require.Equal(t, intstr.String, sp.TargetPort.Type, "Service %s: target the container port %d by name", svc.Name, sp.Port)
			j := slices.IndexFunc(p.taskd.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == sp.TargetPort.StrVal })
			if assert.GreaterOrEqual(t, j, 0, "Service %s: no container port named %q", svc.Name, sp.TargetPort.StrVal) {
				assert.Equal(t, p.taskd.Ports[j].ContainerPort, sp.Port, "Service %s: port %s is the container's", svc.Name, sp.Name)
			}
		}
	}
	if s.deployment != nil {
		assert.NotEmpty(t, s.services, "a Deployment's clients find the pods through a headless Service")
		require.Len(t, s.pdbs, 1, "a Deployment has a PodDisruptionBudget")
	}
	for _, pdb := range s.pdbs {
		assert.True(t, matches(pdb.Spec.Selector), "PodDisruptionBudget %s: its selector does not match the pods' labels", pdb.Name)
		if s.deployment != nil && s.deployment.Spec.Replicas != nil {
			replicas := int(*s.deployment.Spec.Replicas)
			switch {
			case pdb.Spec.MaxUnavailable != nil:
				n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, replicas, true)
				require.NoError(t, err)
				assert.True(t, n >= 1 && n < replicas, "PodDisruptionBudget %s: maxUnavailable %d must let one pod go and keep one of %d", pdb.Name, n, replicas)
			case pdb.Spec.MinAvailable != nil:
				n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, replicas, true)
				require.NoError(t, err)
				assert.True(t, n >= 1 && n < replicas, "PodDisruptionBudget %s: minAvailable %d of %d replicas", pdb.Name, n, replicas)
			default:
				t.Errorf("PodDisruptionBudget %s: neither maxUnavailable nor minAvailable", pdb.Name)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }
