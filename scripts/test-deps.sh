#!/usr/bin/env bash
# Test-only peers that don't come from Debian: the official OpenTelemetry
# protobuf bindings (PyPI opentelemetry-proto) and grpcio for the OTLP test
# receiver (HTTP and gRPC).
# Installed into .tools/venv, never into the system Python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.tools/venv
if [[ ! -x $venv/bin/python ]] || ! $venv/bin/python -c 'import grpc, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc' 2>/dev/null; then
  echo "kerntap setup: installing opentelemetry-proto and grpcio into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'opentelemetry-proto==1.38.0' 'protobuf>=5,<7' 'grpcio==1.85.1'
fi

# Prometheus 3, with its OTLP receiver and native histograms, for
# test/integration/otlp_prometheus.test.ts and prometheus_native.test.ts
# (Debian's prometheus is 2.42). Built from source without the
# service-discovery plugins (the tests use static targets only). Without a Go
# 1.21+ these tests are skipped, except in CI, where they must run.
PROM3_MODULE_VERSION=v0.316.0 # Prometheus 3.16
# An OpenTelemetry Collector of core components only (OTLP receiver, OTLP/HTTP
# exporter), made by the collector's own builder, for
# test/integration/otlp_collector.test.ts.
OTELCOL_VERSION=v0.165.0

# Sets $go to a Go 1.21+ (which fetches the toolchain a module asks for), or
# fails in CI / warns elsewhere, naming what needs it.
find_go() {
  # GO names the toolchain to use; else the one on PATH, else the official tarball's place.
  go=${GO:-$(command -v go || true)}
  [[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
  local minor
  minor=$([[ -n $go ]] && "$go" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p' || true)
  if [[ -z $go || ${minor:-0} -lt 21 ]]; then
    local msg="kerntap setup: Go 1.21 or later is needed to build $1 (found: ${go:-none})"
    # Any non-empty CI value means CI.
    if [[ -n ${CI:-} ]]; then echo "$msg" >&2; exit 1; fi
    echo "$msg; its test will be skipped" >&2
    return 1
  fi
}

prom3=.tools/bin/prometheus3
if [[ ! -x $prom3 || $(cat "$prom3.version" 2>/dev/null) != "$PROM3_MODULE_VERSION" ]] && find_go "Prometheus 3 for the OTLP and native-histogram peer tests"; then
  echo "kerntap setup: building Prometheus 3 ($PROM3_MODULE_VERSION) into $prom3" >&2
  GOBIN="$PWD/.tools/gobin" "$go" install -tags remove_all_sd "github.com/prometheus/prometheus/cmd/prometheus@$PROM3_MODULE_VERSION"
  mkdir -p .tools/bin
  mv .tools/gobin/prometheus "$prom3"
  echo "$PROM3_MODULE_VERSION" >"$prom3.version"
fi

otelcol=.tools/bin/otelcol
if [[ ! -x $otelcol || $(cat "$otelcol.version" 2>/dev/null) != "$OTELCOL_VERSION" ]] && find_go "an OpenTelemetry Collector for the OTLP/gRPC peer test"; then
  echo "kerntap setup: building an OpenTelemetry Collector ($OTELCOL_VERSION) into $otelcol" >&2
  GOBIN="$PWD/.tools/gobin" "$go" install "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION"
  build=$PWD/.tools/otelcol-build
  mkdir -p "$build" .tools/bin
  cat >"$build/manifest.yaml" <<EOF
dist:
  name: otelcol
  description: OpenTelemetry Collector for kerntap's tests (OTLP in, OTLP/HTTP out)
  output_path: $build/out
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $OTELCOL_VERSION
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/otlphttpexporter $OTELCOL_VERSION
EOF
  PATH="$(dirname "$go"):$PATH" .tools/gobin/builder --config="$build/manifest.yaml"
  mv "$build/out/otelcol" "$otelcol"
  echo "$OTELCOL_VERSION" >"$otelcol.version"
fi

# The base image for test/integration/image.test.ts, which builds the
# Dockerfile where no image registry is reachable (about a minute; cached).
bash scripts/image-bases.sh >/dev/null
