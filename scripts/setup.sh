#!/usr/bin/env bash
# Installs what Ambit needs on a fresh Debian machine, and nothing twice:
# Debian packages (when run as root and one is missing) and the npm packages (which include
# Node 24 and build the native addon). Safe to run again; fast when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_debs=()
command -v iptables >/dev/null || need_debs+=(iptables)
command -v nft >/dev/null || need_debs+=(nftables)
command -v ip >/dev/null || need_debs+=(iproute2)
command -v nsenter >/dev/null || need_debs+=(util-linux)
[ -x /usr/lib/cni/bridge ] || need_debs+=(containernetworking-plugins)
command -v iperf3 >/dev/null || need_debs+=(iperf3)
command -v tcpdump >/dev/null || need_debs+=(tcpdump)
command -v make >/dev/null || need_debs+=(make)
command -v g++ >/dev/null || need_debs+=(g++)
command -v python3 >/dev/null || need_debs+=(python3)

if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "ambit setup: missing system packages: ${need_debs[*]} (install them as root, e.g. apt-get install ${need_debs[*]})" >&2
    exit 1
  fi
  echo "ambit setup: installing Debian packages: ${need_debs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
fi

# npm packages: reinstall when the lock file changed since the last install.
if [ ! -x node_modules/.bin/node ] || [ ! -f src/native/build/Release/ambit_native.node ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ambit setup: installing npm packages (Node 24, TypeScript, native addon)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# The Kubernetes control plane for test/kube (etcd, kube-apiserver, kube-controller-manager, kubectl),
# built from the Go module proxy into .cache/kube; a cold build takes about 6 minutes on 2 cores
# (2.7 GB peak), later runs find the binaries and return at once.
bash scripts/build-kube.sh >/dev/null

# The Gateway API CRDs that controller/ installs, from the upstream release on the Go module proxy
# (controller/gateway-api/, git-ignored; instant when already there).
bash scripts/fetch-gateway-api-crds.sh
