#!/usr/bin/env bash
# Fills the type-strip cache (src/boot/ts-strip-cache.mjs) for every source, so that even the first
# start of an agent or a CNI plugin run never loads Node's TypeScript stripper.
set -euo pipefail
cd "$(dirname "$0")/.."
node_modules/.bin/node --input-type=module -e "
const { warm, CACHE_DIR } = await import('./src/boot/ts-strip-cache.mjs');
console.log('type-strip cache: ' + warm('src') + ' sources in ' + CACHE_DIR);
"
