#!/usr/bin/env bash
# A rank killed mid-epoch (SIGKILL): the other fails at once with an error naming what failed,
# the launcher exits non-zero naming the killed rank, and `--resume last` then completes. Then the
# launcher itself SIGKILLed: its ranks stop too (none trains on alone).
#
#   tests/distributed/kill_rank.sh TRAINBUS_BINARY WORK_DIR
set -euo pipefail
trainbus=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/fault_helpers.sh"
common=(fit --nproc-per-node 2 --master-port 29532 --max-epochs 3 --limit-train-batches 150
        --limit-val-batches 2 --limit-test-batches 2 --no-progress-bar --no-model-summary
        --ddp-timeout 60 --out "$work/run")

# The first epoch's checkpoint, then a kill while rank 1 trains the second.
start_until_checkpoint "$work/first.log" "$work/run" "${common[@]}"
rank1=$(children_of "$launcher" 1)
[[ -n $rank1 ]] || { cat "$work/first.log"; echo "FAILED: rank 1 not found"; exit 1; }
kill -KILL "$rank1"
status=0
wait "$launcher" || status=$?
echo "--- first run (rank 1 = pid $rank1 killed), exit $status"; cat "$work/first.log"
[[ $status -ne 0 ]] || { echo "FAILED: the launcher exited 0 after a rank was killed"; exit 1; }
grep -q "launcher: the job failed: rank 1 (pid $rank1) was killed by signal SIGKILL (9)" "$work/first.log" ||
  { echo "FAILED: the launcher did not name rank 1 as the failure"; exit 1; }

resume_completes "$work/resumed.log" "${common[@]}"

# The launcher SIGKILLed while its ranks train: the kernel stops them (PR_SET_PDEATHSIG).
start_until_checkpoint "$work/orphans.log" "$work/orphans" "${common[@]}" --max-epochs 50 --out "$work/orphans"
ranks=$(children_of "$launcher")
[[ $(echo "$ranks" | wc -w) -eq 2 ]] || { cat "$work/orphans.log"; echo "FAILED: ranks not found"; exit 1; }
kill -KILL "$launcher"
wait "$launcher" 2>/dev/null || true
for _ in $(seq 300); do
  alive=0
  for pid in $ranks; do  # a zombie (State: Z) waiting to be reaped is gone
    [[ -e /proc/$pid ]] && ! grep -q "^State:.*Z" "/proc/$pid/status" 2>/dev/null && alive=1
  done
  ((alive)) || break
  sleep 0.1
done
((alive == 0)) || { kill -KILL $ranks 2>/dev/null; echo "FAILED: ranks $ranks outlived their launcher"; exit 1; }
echo "killed rank named, resume completed, no rank outlives its launcher"
