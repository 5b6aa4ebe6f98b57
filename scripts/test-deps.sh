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
