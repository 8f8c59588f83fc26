package main

import (
	"strings"
	"testing"
)

// A small valid rendering; each case below breaks it in one way the check must catch.
const valid = `
apiVersion: v1
kind: Service
metadata: {name: gw, labels: {app: gw}}
spec:
  selector: {app: gw}
  ports: [{name: grpc, port: 50051, targetPort: grpc, appProtocol: grpc}]
---
# a document of comments only is skipped
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gw}
spec:
  selector: {matchLabels: {app: gw}}
  template:
    metadata: {labels: {app: gw}}
    spec:
      terminationGracePeriodSeconds: 21
      securityContext: {runAsNonRoot: true}
      containers:
        - name: gateway
          image: longread:0.1.0
          ports: [{name: grpc, containerPort: 50051}]
          env:
            - {name: LONGREAD_SERVER__DRAIN_DELAY_S, value: "1"}
            - {name: LONGREAD_SERVER__GRACE_S, value: "15"}
          startupProbe: {grpc: {port: 50051, service: ""}}
          readinessProbe: {grpc: {port: 50051, service: longread.v1.AnalysisService}}
          livenessProbe: {grpc: {port: 50051, service: ""}}
          resources: {requests: {cpu: 500m}, limits: {memory: 1Gi}}
          securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
`

func run(t *testing.T, yaml string) error {
	t.Helper()
	objs, err := Decode([]byte(yaml))
	if err != nil {
		return err
	}
	return Check(objs)
}

func TestValid(t *testing.T) {
	if err := run(t, valid); err != nil {
		t.Fatalf("valid rendering refused: %v", err)
	}
}

func TestRefused(t *testing.T) {
	cases := []struct{ name, old, new, want string }{
		{"unknown field", "terminationGracePeriodSeconds: 21", "terminationGracePeriodSeconds: 21\n      restartPolice: Always", "unknown field"},
		{"field in the wrong case", "terminationGracePeriodSeconds: 21", "TerminationGracePeriodSeconds: 21", "unknown field"},
		{"duplicate field", "image: longread:0.1.0", "image: longread:0.1.0\n          image: other", "already set"},
		{"wrong type", "containerPort: 50051", "containerPort: grpc", "cannot unmarshal"},
		{"unknown kind", "kind: Service", "kind: Servise", "not a kind"},
		{"Service selects no pod", "selector: {app: gw}", "selector: {app: other}", "does not select"},
		{"no such target port", "targetPort: grpc", "targetPort: grcp", "no container port"},
		{"Deployment selector", "matchLabels: {app: gw}", "matchLabels: {app: other}", "does not select"},
		{"probe port", "readinessProbe: {grpc: {port: 50051", "readinessProbe: {grpc: {port: 50052", "not a container port"},
		{"HTTP probe", "livenessProbe: {grpc: {port: 50051, service: \"\"}}", "livenessProbe: {tcpSocket: {port: 50051}}", "not the gRPC health check"},
		{"grace under the drain", "terminationGracePeriodSeconds: 21", "terminationGracePeriodSeconds: 16", "not above the drain"},
		{"writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "not read-only"},
		{"root", "runAsNonRoot: true", "runAsNonRoot: false", "may run as root"},
		{"no /tmp", "mountPath: /tmp", "mountPath: /scratch", "nothing writable at /tmp"},
		{"bad name", "name: gw, labels", "name: Gw_1, labels", "name"},
		{"bad label", "labels: {app: gw}}", "labels: {app: \"g w\"}}", "label"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(valid, c.old) {
				t.Fatalf("the case's text %q is not in the valid rendering", c.old)
			}
			err := run(t, strings.Replace(valid, c.old, c.new, 1))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
		})
	}
}
