#!/usr/bin/env bash
# Builds the N-API addon with node-gyp against the headers of the Node that runs Ambit (the node@24
# npm package ships them); falls back to node-gyp's own lookup when they are not there.
set -euo pipefail
cd "$(dirname "$0")/.."
nodedir=""
for d in node_modules/node/node_modules/node-linux-*; do
  [ -f "$d/include/node/node_api.h" ] && nodedir="$PWD/$d" && break
done
exec node_modules/.bin/node node_modules/node-gyp/bin/node-gyp.js rebuild -C src/native ${nodedir:+--nodedir="$nodedir"}
