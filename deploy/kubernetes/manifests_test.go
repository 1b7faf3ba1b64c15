package kubernetes_test

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

func TestMain(m *testing.M) { taskdtest.Main(m) }

// sets are the directories of manifests that are applied together (kubectl apply -f DIR):
// each has one workload (a Deployment or a DaemonSet) and the ConfigMap it mounts.
var sets = []string{".", "daemonset"}

// dockerfile is the image the manifests run.
const dockerfile = "../docker/Dockerfile"

// imageFiles maps the programs that the image installs (and the manifests run) to the
// packages of this repository they are built from; every one must be a COPY destination
// in the Dockerfile.
var imageFiles = map[string]string{
	"/usr/local/bin/taskd":             "cmd/taskd",
	"/usr/local/bin/taskctl":           "cmd/taskctl",
	"/usr/local/lib/taskd/echo-worker": "examples/echo",
}

// newObject returns an empty object of the API type for apiVersion and kind: only the
// kinds the manifests use, so that a typo in either is an error too.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	}
	return nil, false
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decode decodes every document of a manifest file strictly into its Kubernetes API type:
// an unknown or duplicate field, or a value of the wrong type, is an error.
func decode(data []byte) ([]any, error) {
	var objs []any
	for i, doc := range docSeparator.Split(string(data), -1) {
		if onlyComments(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		obj, ok := newObject(tm.APIVersion, tm.Kind)
		if !ok {
			return nil, fmt.Errorf("document %d: apiVersion %q, kind %q: not a kind these manifests use (ConfigMap, Service, Deployment, DaemonSet, PodDisruptionBudget): a typo?", i+1, tm.APIVersion, tm.Kind)
		}
		// YAML to JSON refuses duplicate keys; the JSON decoder the API server uses
		// matches field names case-sensitively (encoding/json would take
		// readOnlyRootFileSystem for readOnlyRootFilesystem) and reports unknown ones.
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, tm.Kind, err)
		}
		strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
		if err == nil {
			err = errors.Join(strict...)
		}
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, tm.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// onlyComments reports whether a YAML document has nothing but comments and blank lines.
func onlyComments(doc string) bool {
	sc := bufio.NewScanner(strings.NewReader(doc))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// TestEveryManifestDecodesStrictly decodes every .yaml file under deploy/kubernetes, and
// checks that each is in a set (so that the cross-checks of TestSets see it).
func TestEveryManifestDecodesStrictly(t *testing.T) {
	var files []string
	require.NoError(t, filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	}))
	require.NotEmpty(t, files)
	kinds := map[string]int{}
	for _, f := range files {
		assert.True(t, slices.Contains(sets, filepath.Dir(f)), "%s is not in a directory that TestSets checks (%v): add its directory to sets", f, sets)
		assert.True(t, strings.HasSuffix(f, ".yaml"), "%s: name manifests *.yaml", f)
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		objs, err := decode(data)
		if !assert.NoError(t, err, f) {
			continue
		}
		assert.NotEmpty(t, objs, "%s has no object", f)
		for _, o := range objs {
			kinds[fmt.Sprintf("%T", o)]++
		}
	}
	t.Logf("decoded %d files: %v", len(files), kinds)
	assert.Equal(t, map[string]int{
		"*v1.ConfigMap": 2, "*v1.Deployment": 1, "*v1.DaemonSet": 1, "*v1.Service": 1, "*v1.PodDisruptionBudget": 1,
	}, kinds)
}

// TestDecodeIsStrict shows that decode refuses what a typo makes: the test above would
// pass on anything if it did not.
func TestDecodeIsStrict(t *testing.T) {
	data, err := os.ReadFile("deployment.yaml")
	require.NoError(t, err)
	good := string(data)
	_, err = decode(data)
	require.NoError(t, err)
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown field", "  replicas: 3\n", "  replicas: 3\n  replica: 3\n", `unknown field "spec.replica"`},
		{"misspelt nested field", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem"`},
		{"wrong type", "  replicas: 3\n", "  replicas: three\n", "cannot unmarshal"},
		{"wrong type in a list", "containerPort: 7443", "containerPort: [7443]", "cannot unmarshal"},
		{"bad quantity", "memory: 512Mi", "memory: 512MB!", "quantities must match"},
		{"duplicate field", "  replicas: 3\n", "  replicas: 3\n  replicas: 4\n", `key "replicas" already set`},
		{"unknown kind", "kind: Deployment", "kind: Deploymnet", "not a kind these manifests use"},
		{"wrong apiVersion", "apiVersion: apps/v1", "apiVersion: extensions/v1beta1", "not a kind these manifests use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, good, tc.old)
			_, err := decode([]byte(strings.Replace(good, tc.old, tc.new, 1)))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// set is the objects of one directory of manifests.
type set struct {
	dir        string
	configMaps map[string]*corev1.ConfigMap
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	deployment *appsv1.Deployment
	daemonSet  *appsv1.DaemonSet
}

func loadSet(t *testing.T, dir string) *set {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	require.NoError(t, err)
	s := &set{dir: dir, configMaps: map[string]*corev1.ConfigMap{}}
	workloads := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		objs, err := decode(data)
		require.NoError(t, err, f)
		for _, o := range objs {
			switch o := o.(type) {
			case *corev1.ConfigMap:
				s.configMaps[o.Name] = o
			case *corev1.Service:
				s.services = append(s.services, o)
			case *policyv1.PodDisruptionBudget:
				s.pdbs = append(s.pdbs, o)
			case *appsv1.Deployment:
				s.deployment = o
				workloads++
			case *appsv1.DaemonSet:
				s.daemonSet = o
				workloads++
			}
		}
	}
	require.Equal(t, 1, workloads, "%s: want one Deployment or DaemonSet", dir)
	return s
}

// pod returns the workload's pod template, its selector and its name.
func (s *set) pod() (*corev1.PodTemplateSpec, *metav1.LabelSelector, string) {
	if s.deployment != nil {
		return &s.deployment.Spec.Template, s.deployment.Spec.Selector, "Deployment " + s.deployment.Name
	}
	return &s.daemonSet.Spec.Template, s.daemonSet.Spec.Selector, "DaemonSet " + s.daemonSet.Name
}

// image is what the Dockerfile says about the image.
type image struct {
	files      map[string]bool // COPY destinations
	user       string          // USER
	entrypoint string          // ENTRYPOINT's program
}

func readDockerfile(t *testing.T) image {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	require.NoError(t, err)
	img := image{files: map[string]bool{}}
	froms := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "FROM":
			froms++
		case "COPY":
			if slices.ContainsFunc(f, func(s string) bool { return strings.HasPrefix(s, "--from=") }) {
				img.files[f[len(f)-1]] = true
			}
		case "USER":
			img.user = f[1]
		case "ENTRYPOINT":
			m := regexp.MustCompile(`^ENTRYPOINT \["([^"]+)"`).FindStringSubmatch(line)
			require.NotNil(t, m, "ENTRYPOINT in exec form, please: %s", line)
			img.entrypoint = m[1]
		}
	}
	assert.GreaterOrEqual(t, froms, 2, "the Dockerfile is multi-stage: a Go builder, then a small runtime image")
	assert.Contains(t, string(data), "CGO_ENABLED=0", "static binaries: the runtime image has no libc")
	assert.Regexp(t, `^[1-9][0-9]*:[1-9][0-9]*$`, img.user, "USER is a numeric non-root uid:gid, so that runAsNonRoot can check it")
	for prog := range imageFiles {
		assert.True(t, img.files[prog], "the Dockerfile does not install %s", prog)
	}
	return img
}
