#!/usr/bin/env bash
# Puts the Gateway API standard-channel CRDs of the upstream sigs.k8s.io/gateway-api release into
# controller/gateway-api/ (git-ignored; `kubectl apply -k controller/` includes it): the module is
# fetched with `go mod download` from the Go module proxy (checked against sum.golang.org) and its
# config/crd/standard/*.yaml are copied from the module cache unchanged, with a kustomization.yaml
# listing them. Nothing is hand-copied or edited. Idempotent: does nothing when that version is there.
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
dest=controller/gateway-api
stamp=$dest/.version

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$GATEWAY_API_VERSION" ] && [ -f "$dest/kustomization.yaml" ]; then
  exit 0
fi

command -v go >/dev/null || PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || { echo "fetch-gateway-api-crds: Go is not installed (expected /usr/local/go/bin/go)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# Outside any module, `go mod download -json MODULE@VERSION` downloads (or finds) the module and
# prints where its files are.
json=$(cd /tmp && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir/config/crd/standard" ]; then
  echo "fetch-gateway-api-crds: go mod download of sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION failed:" >&2
  printf '%s\n' "$json" >&2
  exit 1
fi

tmp=$(mktemp -d "$dest.partial.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
files=()
for f in "$dir"/config/crd/standard/*.yaml; do
  name=$(basename "$f")
  [ "$name" = kustomization.yaml ] && continue
  cp "$f" "$tmp/$name"
  chmod 644 "$tmp/$name"   # the module cache is read-only
  files+=("$name")
done
{
  echo "# Written by scripts/fetch-gateway-api-crds.sh: sigs.k8s.io/gateway-api $GATEWAY_API_VERSION, standard channel."
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  for n in "${files[@]}"; do echo "  - $n"; done
} >"$tmp/kustomization.yaml"
echo "$GATEWAY_API_VERSION" >"$tmp/.version"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "fetch-gateway-api-crds: ${#files[@]} files of sigs.k8s.io/gateway-api $GATEWAY_API_VERSION in $dest" >&2
