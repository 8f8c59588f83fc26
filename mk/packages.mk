# Packages that install the way each ecosystem expects (issue 20), built into dist/:
#
#   make packages       dist/longread_client-V-py3-none-any.whl   the Python client (pip)
#                       dist/longread-V-py3-none-any.whl          the server, needing the client's
#                       dist/longread_sandbox-V-py3-none-any.whl  the vendor emulator
#                       dist/longread-client-V.tgz                the npm package (npm pack)
#                       dist/goproxy/                             the Go module as a module proxy
#                                                                 serves it (GOPROXY=file://...)
#                       dist/maven/                               the Java client, sources and
#                                                                 javadoc in a Maven repository
#   make packages-test  each installed into a new project outside the repository, the same
#                       program run in each against one live server (tests/packages/run.py)
#
# The Go module is published by a tag client/go/vX.Y.Z (a module in a subdirectory): dist/goproxy
# holds what that tag would serve, so it can be installed before the tag exists.

PACKAGES_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DIST := dist
MODPROXY := tools/modproxy

TEST_EXTRA += packages-test

.PHONY: packages packages-test

$(TOOLS)/modproxy: $(MODPROXY)/go.mod $(MODPROXY)/go.sum $(MODPROXY)/main.go
	@unformatted=$$(gofmt -l $(MODPROXY)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	cd $(MODPROXY) && go vet ./... && go build -o $(TOOLS)/modproxy .

packages: install $(TS_CLIENT)/node_modules/.package-lock.json $(TOOLS)/modproxy
	rm -rf $(DIST) && mkdir -p $(DIST)
	@# The venv's setuptools, no isolated build env: the wheels build offline. setuptools'
	@# build/ directories are removed before and after, so no file deleted from the tree
	@# survives in a wheel.
	rm -rf build client/python/build sandbox/build
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(DIST) ./client/python . ./sandbox
	rm -rf build client/python/build sandbox/build
	cd $(TS_CLIENT) && npm pack --loglevel=error --pack-destination $(abspath $(DIST)) >/dev/null
	$(TOOLS)/modproxy -dir $(GO_CLIENT) -version v$(PACKAGES_VERSION) -out $(DIST)/goproxy \
	  -time $$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
	cd $(JAVA_CLIENT) && $(MVN) -Pdist deploy -DskipTests \
	  -DaltDeploymentRepository=dist::file://$(abspath $(DIST))/maven
	@ls $(DIST)

packages-test: packages
	@unformatted=$$(gofmt -l tests/packages/consumers/go); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(PY) tests/packages/run.py
