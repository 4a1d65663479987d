#!/usr/bin/env bash
# Ambit benchmarks: bench/run.sh [throughput|latency|scale|cni|policy|kube-scale|all]   (root, Linux)
# Each benchmark gets a fresh two-node local mesh (instance $AMBIT_LOCAL_INSTANCE, default "bench"),
# so one benchmark's leftovers (agent heap, pooled connections) do not colour the next one's figures.
# Prints markdown tables on stdout (progress on stderr). `all` also rewrites the results part of
# bench/README.md. Knobs: BENCH_REPS, BENCH_IPERF_SECONDS, BENCH_DURATION, BENCH_QPS, BENCH_CONNS,
# BENCH_PODS, BENCH_CNI_RUNS, BENCH_KUBE_SERVICES, BENCH_KUBE_PODS, BENCH_KUBE_NODES (see the scripts).
set -euo pipefail
cd "$(dirname "$0")/.."
export AMBIT_LOCAL_INSTANCE="${AMBIT_LOCAL_INSTANCE:-bench}"
NODE=node_modules/.bin/node
what="${1:-all}"
case "$what" in
  throughput|latency|scale|cni|policy|kube-scale) benches=("$what") ;;
  all) benches=(throughput latency scale cni policy kube-scale) ;;
  *) echo "usage: bench/run.sh [throughput|latency|scale|cni|policy|kube-scale|all]" >&2; exit 2 ;;
esac

bash bench/tools.sh >/dev/null
down() { bin/ambit local down >/dev/null 2>&1 || true; }
out=$(mktemp /tmp/ambit-bench.XXXXXX)
trap 'down; rm -f "$out"' EXIT
trap 'down; exit 130' INT TERM

machine() {
  local mem model
  mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
  model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(nproc) CPUs ($model), kernel $(uname -r), memory $mem"
  echo "- Load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other engineers' tests may share the machine)"
  echo "- Tools: Node $($NODE --version), $(.cache/bin/fortio version 2>/dev/null | head -1 | sed 's/^/fortio /'), $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
  echo "- Command: \`bench/run.sh $what\`"
}

# Share of all CPUs busy over 2 s (before a benchmark, with our mesh idle: other people's work).
busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  local total=0 idle i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $((100 * (total - idle) / (total > 0 ? total : 1)))
}
# Waits (up to 2 min) for the machine to be quiet, so the figures are ours; reports what it saw.
quiet() {
  local pct i
  for i in $(seq 1 60); do pct=$(busy); [ "$pct" -lt 25 ] && break; done
  echo "$pct"
}

machine >"$out"
echo >>"$out"
for b in "${benches[@]}"; do
  down
  # kube-scale brings its own control plane, controller and agents (no local mesh).
  if [ "$b" != kube-scale ]; then
    echo "# $(date -u +%T) $b: starting a fresh local mesh ($AMBIT_LOCAL_INSTANCE)" >&2
    bin/ambit local up --nodes 2 >/dev/null
  fi
  b_busy=$(quiet)
  echo "# $(date -u +%T) $b: machine ${b_busy}% busy before the start" >&2
  $NODE "bench/$b.ts" >>"$out"
  printf "\n_Machine busy before this benchmark (other work, our mesh idle): %s%% of the CPUs._\n" "$b_busy" >>"$out"
  echo >>"$out"
  down
done
echo "- Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out"

cat "$out"
if [ "$what" = all ]; then
  $NODE bench/readme.ts "$out"
  echo "# bench/README.md updated" >&2
fi
