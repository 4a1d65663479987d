#!/usr/bin/env bash
# Installs the load tools the benchmarks use into .cache/bin (once): fortio (Istio's own load
# tool, built from the Go module proxy) and iperf3 (Debian). Prints the fortio path.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache/bin
if [ ! -x .cache/bin/fortio ]; then
  # 1.63.0: later releases pull a module the Go proxy here does not serve.
  GOBIN="$PWD/.cache/bin" go install fortio.org/fortio@v1.63.0 >&2
fi
command -v iperf3 >/dev/null || { apt-get update -qq && apt-get install -y -qq iperf3 >/dev/null; }
echo "$PWD/.cache/bin/fortio"
