#!/usr/bin/env bash
# One command to see Ambit work: install what is missing, start a two-node local mesh, apply the
# sample app, and show how to look at its traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" != Linux ] || [ "$(id -u)" -ne 0 ]; then
  echo "ambit local needs Linux and root (it creates network namespaces, a bridge and iptables rules); run: sudo npm run local" >&2
  exit 1
fi
bash scripts/setup.sh
bin/ambit local up "$@"
bin/ambit local apply -f docs/examples/demo.yaml
bin/ambit local get pods -A -o wide
cat <<'TXT'

The mesh is up. Try:
  bin/ambit local exec demo/sleep -- http-get http://echo.demo/            # a meshed call over HBONE
  bin/ambit local exec legacy/sleep -- http-get http://echo.demo/          # a non-mesh client (PERMISSIVE)
  tcpdump -ni ambit0 -A port 15008                                          # node-to-node: TLS only
  bin/ambit local logs demo/sleep ; bin/ambit local down                    # clean up
TXT
