#!/usr/bin/env bash
# A rank that hangs mid-epoch (SIGSTOP: alive, holding its connections, answering nothing): the
# other fails at the collective timeout with an error that says so, the launcher names the hung
# rank, stops it and exits non-zero within the timeout plus its waits (never a hang), and
# `--resume last` then completes.
#
#   tests/distributed/hang_rank.sh TRAINBUS_BINARY WORK_DIR
set -euo pipefail
trainbus=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/fault_helpers.sh"
common=(fit --nproc-per-node 2 --master-port 29533 --max-epochs 4 --limit-train-batches 150
        --limit-val-batches 2 --limit-test-batches 2 --no-progress-bar --no-model-summary
        --ddp-timeout 5 --out "$work/run")

start_until_checkpoint "$work/first.log" "$work/run" "${common[@]}"
rank1=$(children_of "$launcher" 1)
[[ -n $rank1 ]] || { cat "$work/first.log"; echo "FAILED: rank 1 not found"; exit 1; }
kill -STOP "$rank1"
stopped_at=$SECONDS
status=0
wait "$launcher" || status=$?
took=$((SECONDS - stopped_at))
echo "--- first run (rank 1 = pid $rank1 stopped), exit $status after ${took} s"; cat "$work/first.log"
kill -KILL "$rank1" 2>/dev/null || true  # should the launcher have left it (a failure below)
[[ $status -ne 0 ]] || { echo "FAILED: the launcher exited 0 while a rank hung"; exit 1; }
# The timeout (5 s), the launcher's wait for a declared failure (5 s), SIGTERM after 1 s and
# SIGKILL 30 s later (a stopped rank handles no SIGTERM), and slack for a loaded machine.
((took < 75)) || { echo "FAILED: the launcher took ${took} s to end a hung job"; exit 1; }
grep -q "rank 0 of 2: .* failed after .* s: .*Another rank (rank 1, the only other one) did not reach this point within the timeout (5 s)" "$work/first.log" ||
  { echo "FAILED: rank 0 did not say that another rank did not reach the collective"; exit 1; }
grep -q "still running after the others ended: rank 1 (pid $rank1)" "$work/first.log" ||
  { echo "FAILED: the launcher did not name the hung rank 1"; exit 1; }
grep -q "rank 1 (pid $rank1) was killed by signal SIGKILL (9), stopped by the launcher" "$work/first.log" ||
  { echo "FAILED: the launcher did not stop the hung rank"; exit 1; }

resume_completes "$work/resumed.log" "${common[@]}"
echo "hung rank named and stopped within ${took} s, resume completed"
