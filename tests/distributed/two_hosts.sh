#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces joined by a veth pair, one rank each, meeting by
# address (node 0's 10.231.R.1; only addresses of namespaces this test makes). Each runs
# `trainbus fit --nnodes 2 --node-rank N --nproc-per-node 1 --master-addr 10.231.R.1`, each with
# its own --out, as two machines would have: node 0 (rank 0) writes the checkpoints, logs and
# recording there; node 1 (rank 1) writes nothing.
# Exit 77 (ctest's skip) with the reason where namespaces cannot be made (not root, no `ip`).
#
#   tests/distributed/two_hosts.sh TRAINBUS_BINARY WORK_DIR
set -euo pipefail
trainbus=$1
work=$2

skip() { echo "SKIPPED: $*" >&2; exit 77; }
command -v ip >/dev/null || skip "no \`ip\` command (Debian's iproute2) to make network namespaces"
[[ $(id -u) -eq 0 ]] || skip "making network namespaces needs root"

tag=tb$$                          # unique per run: parallel runs do not collide
subnet=10.231.$(($$ % 250)).      # a /24 of its own
a=${tag}a b=${tag}b
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$a" 2>/dev/null || skip "cannot make a network namespace here (ip netns add failed)"
ip netns add "$b"
ip link add "${a}v" type veth peer name "${b}v"
ip link set "${a}v" netns "$a"
ip link set "${b}v" netns "$b"
ip -n "$a" addr add "${subnet}1/24" dev "${a}v"
ip -n "$b" addr add "${subnet}2/24" dev "${b}v"
for ns in "$a" "$b"; do
  ip -n "$ns" link set lo up
done
ip -n "$a" link set "${a}v" up
ip -n "$b" link set "${b}v" up

rm -rf "$work" && mkdir -p "$work"
common=(fit --nnodes 2 --nproc-per-node 1 --master-addr "${subnet}1" --master-port 29531
        --max-epochs 1 --limit-train-batches 10 --limit-val-batches 2 --limit-test-batches 2
        --no-progress-bar --no-model-summary --ddp-timeout 60)
ip netns exec "$a" "$trainbus" "${common[@]}" --node-rank 0 --out "$work/run0" \
  >"$work/node0.log" 2>&1 &
node0=$!
status1=0
ip netns exec "$b" "$trainbus" "${common[@]}" --node-rank 1 --out "$work/run1" \
  >"$work/node1.log" 2>&1 || status1=$?
status0=0
wait "$node0" || status0=$?
echo "--- node 0 (${subnet}1), exit $status0"; cat "$work/node0.log"
echo "--- node 1 (${subnet}2), exit $status1"; cat "$work/node1.log"
[[ $status0 -eq 0 && $status1 -eq 0 ]] || { echo "FAILED: a node exited non-zero"; exit 1; }
grep -q "batch size 64 per rank x 2 ranks (DDP)" "$work/node0.log" ||
  { echo "FAILED: node 0 did not train as rank 0 of 2"; exit 1; }
grep -q "^test  test_acc" "$work/node0.log" || { echo "FAILED: no test line from node 0"; exit 1; }
if grep -q "trainbus fit:" "$work/node1.log"; then
  echo "FAILED: node 1 (rank 1) reported as rank 0 does"; exit 1
fi
# What each node wrote into its own --out.
for file in checkpoints/last.ckpt version_0/metrics.csv version_0/events.tbrec; do
  [[ -e "$work/run0/$file" ]] || { echo "FAILED: node 0 (rank 0) did not write run0/$file"; exit 1; }
done
written1=$(find "$work/run1" -type f 2>/dev/null || true)
[[ -z "$written1" ]] || { echo "FAILED: node 1 (rank 1) wrote files of its own:"; echo "$written1"; exit 1; }
echo "two hosts trained as one job"
