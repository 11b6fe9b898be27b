//go:build tools

// Package tools is a wrapper module whose only job is to build kube-apiserver,
// kube-controller-manager and kube-scheduler at the version pinned in go.mod (see
// deploy/local/setup.d/45-kube.sh). k8s.io/kubernetes requires its staging modules at
// v0.0.0; go.mod replaces each with the published v0.<minor>.<patch>.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
