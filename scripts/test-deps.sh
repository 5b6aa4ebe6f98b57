#!/usr/bin/env bash
# Test-only peers that don't come from Debian: the official OpenTelemetry
# protobuf bindings (PyPI opentelemetry-proto) for the OTLP test receiver.
# Installed into .tools/venv, never into the system Python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.tools/venv
if [[ ! -x $venv/bin/python ]] || ! $venv/bin/python -c 'import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2' 2>/dev/null; then
  echo "kerntap setup: installing opentelemetry-proto into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'opentelemetry-proto==1.38.0' 'protobuf>=5,<7'
fi

# Prometheus 3 and its OTLP receiver, for test/integration/otlp_prometheus.test.ts
# (Debian's prometheus is 2.42, without one). Built from source with Go 1.21+
# (which fetches the toolchain the module asks for), without the
# service-discovery plugins (the tests use static targets only). Without such a
# Go the test is skipped, except in CI, where it must run.
PROM3_MODULE_VERSION=v0.316.0 # Prometheus 3.16
prom3=.tools/bin/prometheus3
if [[ ! -x $prom3 || $(cat "$prom3.version" 2>/dev/null) != "$PROM3_MODULE_VERSION" ]]; then
  # GO names the toolchain to use; else the one on PATH, else the official tarball's place.
  go=${GO:-$(command -v go || true)}
  [[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
  minor=$([[ -n $go ]] && "$go" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p' || true)
  if [[ -z $go || ${minor:-0} -lt 21 ]]; then
    msg="kerntap setup: Go 1.21 or later is needed to build Prometheus 3 for the OTLP peer test (found: ${go:-none})"
    # Any non-empty CI value means CI.
    if [[ -n ${CI:-} ]]; then echo "$msg" >&2; exit 1; fi
    echo "$msg; that test will be skipped" >&2
  else
    echo "kerntap setup: building Prometheus 3 ($PROM3_MODULE_VERSION) into $prom3" >&2
    GOBIN="$PWD/.tools/gobin" "$go" install -tags remove_all_sd "github.com/prometheus/prometheus/cmd/prometheus@$PROM3_MODULE_VERSION"
    mkdir -p .tools/bin
    mv .tools/gobin/prometheus "$prom3"
    echo "$PROM3_MODULE_VERSION" >"$prom3.version"
  fi
fi
