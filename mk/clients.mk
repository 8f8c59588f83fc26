# Go, TypeScript and Java clients (issue 7): code generation, builds, unit tests, and the
# conformance suite that holds all four clients (Python included) to the same cases.
#
#   make clients-generate         regenerate client/{go,ts,java} from protos/ (part of `make generate`)
#   make clients-check-generated  fail when regenerating changes the committed code
#   make clients-test             build the three clients and run their unit tests
#   make conformance              one live server, every case in every language, grpcurl + ghz
#
# Every tool is pinned here and installed under .tools/ (Go tools with `go install`; protoc and
# protoc-gen-grpc-java from Maven Central) or client/ts/node_modules (protoc-gen-es, tsc).

PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GHZ_VERSION := v0.121.0
# com.google.protobuf:protoc 4.36.2 is protoc 36.2, matching protobuf-java 4.36.2 in the pom.
PROTOC_VERSION := 4.36.2
# The newest protoc-gen-grpc-java whose binaries Maven Central serves here (1.84+ are missing);
# the pom's grpc-java runtime (1.85.1) is newer, which grpc-java supports.
PROTOC_GEN_GRPC_JAVA_VERSION := 1.83.1
MAVEN_DEPENDENCY_PLUGIN := org.apache.maven.plugins:maven-dependency-plugin:3.8.1

MVN ?= mvn -B -q
MVN_CLASSIFIER := linux-$(subst aarch64,aarch_64,$(shell uname -m))
GO_CLIENT := client/go
TS_CLIENT := client/ts
JAVA_CLIENT := client/java
CLIENT_GEN_DIRS := $(GO_CLIENT)/longread/v1 $(TS_CLIENT)/src/gen $(JAVA_CLIENT)/src/main/java/dev/longread/v1
GEN_PATH := $(TOOLS):$(abspath $(TS_CLIENT))/node_modules/.bin:$$PATH

TEST_EXTRA += clients-check-generated clients-test conformance
GENERATE_EXTRA += clients-generate

.PHONY: clients-tools clients-generate clients-check-generated clients-build clients-test conformance

# ---- tools (a stamp per version, so bumping a pin reinstalls) ----

$(TOOLS)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	touch $@

$(TOOLS)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	touch $@

$(TOOLS)/.ghz-$(GHZ_VERSION):
	GOBIN=$(TOOLS) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	touch $@

# Native binaries published on Maven Central with a platform classifier.
$(TOOLS)/.protoc-$(PROTOC_VERSION):
	$(MVN) $(MAVEN_DEPENDENCY_PLUGIN):copy -Dmdep.overWriteReleases=true \
	  -Dartifact=com.google.protobuf:protoc:$(PROTOC_VERSION):exe:$(MVN_CLASSIFIER) -DoutputDirectory=$(TOOLS)/maven
	install -m 755 $(TOOLS)/maven/protoc-$(PROTOC_VERSION)-$(MVN_CLASSIFIER).exe $(TOOLS)/protoc
	touch $@

$(TOOLS)/.protoc-gen-grpc-java-$(PROTOC_GEN_GRPC_JAVA_VERSION):
	$(MVN) $(MAVEN_DEPENDENCY_PLUGIN):copy -Dmdep.overWriteReleases=true \
	  -Dartifact=io.grpc:protoc-gen-grpc-java:$(PROTOC_GEN_GRPC_JAVA_VERSION):exe:$(MVN_CLASSIFIER) -DoutputDirectory=$(TOOLS)/maven
	install -m 755 $(TOOLS)/maven/protoc-gen-grpc-java-$(PROTOC_GEN_GRPC_JAVA_VERSION)-$(MVN_CLASSIFIER).exe $(TOOLS)/protoc-gen-grpc-java
	touch $@

$(TS_CLIENT)/node_modules/.package-lock.json: $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	cd $(TS_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

GEN_TOOLS := $(TOOLS)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION) \
  $(TOOLS)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION) \
  $(TOOLS)/.protoc-$(PROTOC_VERSION) $(TOOLS)/.protoc-gen-grpc-java-$(PROTOC_GEN_GRPC_JAVA_VERSION) \
  $(TS_CLIENT)/node_modules/.package-lock.json

clients-tools: $(GEN_TOOLS) $(TOOLS)/.ghz-$(GHZ_VERSION)

# ---- generation ----

# Removes the old output first, so code for a deleted proto does not linger.
clients-generate: $(GEN_TOOLS)
	rm -rf $(TS_CLIENT)/src/gen $(JAVA_CLIENT)/src/main/java/dev/longread/v1
	rm -f $(GO_CLIENT)/longread/v1/*.pb.go
	PATH=$(GEN_PATH) $(BUF) generate
	PATH=$(GEN_PATH) $(BUF) generate --template $(TS_CLIENT)/buf.gen.rpc.yaml

# Regenerates, then fails on any difference from what is committed (new files included).
clients-check-generated: clients-generate
	git diff --exit-code -- $(CLIENT_GEN_DIRS)
	@untracked=$$(git status --porcelain --untracked-files=all -- $(CLIENT_GEN_DIRS)); \
	if [ -n "$$untracked" ]; then echo "generated code not committed:"; echo "$$untracked"; exit 1; fi

# ---- builds and unit tests ----

clients-build: $(TS_CLIENT)/node_modules/.package-lock.json
	cd $(GO_CLIENT) && go build -o bin/ ./cmd/...
	cd $(TS_CLIENT) && npx tsc -p .
	cd $(JAVA_CLIENT) && $(MVN) package -DskipTests

clients-test: $(TS_CLIENT)/node_modules/.package-lock.json
	@unformatted=$$(gofmt -l $(GO_CLIENT)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	cd $(GO_CLIENT) && go vet ./... && go test ./...
	cd $(TS_CLIENT) && npx tsc -p . && node --test dist/test/
	cd $(JAVA_CLIENT) && $(MVN) package

# ---- conformance ----

conformance: install tools clients-tools clients-build
	$(PY) tests/conformance/run.py
