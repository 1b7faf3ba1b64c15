// Package kubernetes holds the tests of the Kubernetes manifests in this directory
// (deploy/kubernetes/*.yaml and daemonset/*.yaml) and of the container image's Dockerfile
// (deploy/docker); it has no other code. The tests decode every manifest strictly with the
// Kubernetes API types, so that an unknown field or a value of the wrong type fails the
// build; check that the manifests agree with each other and with taskd (the ConfigMap's
// config loads through taskd's own config loader, the programs they run are in the image,
// terminationGracePeriodSeconds is above shutdown_grace, the Service and the
// PodDisruptionBudget select the pods); and run the probes' and the preStop hook's
// commands against a real taskd started on the ConfigMap's config. README.md says how to
// deploy.
package kubernetes
