#!/usr/bin/env bash
# The whole test suite: type check, unit tests, then tests in real network namespaces (root), then
# tests against a real Kubernetes API server (built by scripts/build-kube.sh).
# Test files run one at a time: the netns tests share the machine's CPU and its network stack.
set -euo pipefail
cd "$(dirname "$0")/.."
node=node_modules/.bin/node
"$node" node_modules/typescript/bin/tsc --noEmit -p .
if [ "$(id -u)" -ne 0 ]; then
  echo "ambit tests: the netns tests need root (network namespaces, iptables); run as root" >&2
  exit 1
fi
exec "$node" --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec \
  'test/unit/**/*.test.ts' 'test/netns/**/*.test.ts' 'test/kube/**/*.test.ts'
