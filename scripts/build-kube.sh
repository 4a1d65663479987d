#!/usr/bin/env bash
# Builds the Kubernetes control plane used by the kube tests and `ambit local up --kubernetes`:
# kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes, and etcd from
# go.etcd.io/etcd/server/v3, through the wrapper modules in tools/kube (see generate.sh there).
# Binaries go to .cache/kube/kubernetes-<version>/bin and .cache/kube/etcd-<version>/bin (git
# ignores .cache; AMBIT_KUBE_CACHE moves it). Does nothing when they are already there; prints the
# two bin directories.
# A cold build takes about 6 minutes and 2.7 GB of memory on 2 cores (see docs/kube-control-plane.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. tools/kube/versions.env

command -v go >/dev/null || PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || { echo "build-kube: Go is not installed (expected /usr/local/go/bin/go)" >&2; exit 1; }
# Build with the machine's Go; both releases declare go 1.26.0 (see tools/kube/versions.env).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
# Go needs somewhere for its caches; a bare CI shell may have no HOME.
if [ -z "${HOME:-}" ]; then export GOCACHE=${GOCACHE:-$root/.cache/go/build} GOPATH=${GOPATH:-$root/.cache/go/path}; fi

cache=${AMBIT_KUBE_CACHE:-$root/.cache/kube}
kube_dir=$cache/kubernetes-$KUBE_VERSION
etcd_dir=$cache/etcd-$ETCD_VERSION

# Builds into a fresh directory and renames it into place, so an interrupted build leaves nothing
# that looks finished. $1 = final dir, $2 = module dir, $3 = ldflags, rest = packages.
build() {
  local dest=$1 module=$2 ldflags=$3; shift 3
  local tmp="$dest.partial.$$"
  rm -rf "$dest".partial.*
  mkdir -p "$tmp/bin"
  echo "build-kube: building $* (cold: several minutes)" >&2
  local start=$SECONDS
  (cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" "$@")
  rm -rf "$dest"
  mv "$tmp" "$dest"
  echo "build-kube: built into $dest/bin in $((SECONDS - start)) s" >&2
}

if [ ! -x "$kube_dir/bin/kube-apiserver" ] || [ ! -x "$kube_dir/bin/kube-controller-manager" ] \
   || [ ! -x "$kube_dir/bin/kubectl" ]; then
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  pkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
  ldflags="-s -w"
  for p in "${pkgs[@]}"; do
    ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.gitCommit=module-$KUBE_VERSION"
  done
  build "$kube_dir" tools/kube/kubernetes "$ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
fi

if [ ! -x "$etcd_dir/bin/etcd" ]; then
  build "$etcd_dir" tools/kube/etcd "-s -w" go.etcd.io/etcd/server/v3
  # go names the binary after the path element before the /v3 suffix.
  mv "$etcd_dir/bin/server" "$etcd_dir/bin/etcd"
fi

echo "$kube_dir/bin"
echo "$etcd_dir/bin"
