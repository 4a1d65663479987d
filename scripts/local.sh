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
vip=$(bin/ambit local get services -n demo -o json | node_modules/.bin/node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).items[0].spec.clusterIP))')
instance=${AMBIT_LOCAL_INSTANCE:-ambit}
cat <<TXT

The mesh is up, with the sample app (docs/examples/demo.yaml). Try:
  bin/ambit local exec demo/sleep -- http-get http://$vip/      # meshed client -> echo, over HBONE (mTLS)
  bin/ambit local exec legacy/sleep -- http-get http://$vip/    # a client outside the mesh (PERMISSIVE)
  tcpdump -ni ${instance}0 -A tcp port 15008               # the node-to-node link: TLS only
  tail /run/ambit/$instance/logs/agent-node-*.log                     # one "connection complete" line per connection
  bin/ambit local down                                            # remove everything
TXT
