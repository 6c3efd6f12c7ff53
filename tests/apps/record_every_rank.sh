#!/usr/bin/env bash
# `trainbus fit --nproc-per-node 2 --record-every-rank`: each rank records its own events in the
# run directory, rank 1's beside rank 0's with .rank1 before .tbrec, each recording's header (and
# its setup and fit_start events) naming its rank and the world size, each with its own batches.
# Without the flag rank 0 alone records.
#
#   tests/apps/record_every_rank.sh TRAINBUS_BINARY WORK_DIR MASTER_PORT
set -euo pipefail
trainbus=$1
work=$2
port=$3
rm -rf "$work" && mkdir -p "$work"
common=(fit --nproc-per-node 2 --master-port "$port" --ddp-timeout 60 --max-epochs 1 --limit-train-batches 6
        --limit-val-batches 2 --limit-test-batches 2 --no-progress-bar --no-model-summary
        --no-checkpoint --no-csv --no-tensorboard)
fail() { cat "$work/fit.log"; echo "FAILED: $1"; exit 1; }

"$trainbus" "${common[@]}" --out "$work/every" --record-every-rank >"$work/fit.log" 2>&1 ||
  fail "the fit with --record-every-rank failed"
run="$work/every/version_0"
recorded=$(cd "$run" && ls | sort | tr '\n' ' ')
[[ "$recorded" == "events.rank1.tbrec events.tbrec " ]] || fail "unexpected files in $run: $recorded"
grep -q "^recording: $run/events.tbrec (rank 0; rank R's beside it" "$work/fit.log" ||
  fail "the recordings are not reported"
for rank in 0 1; do
  file="$run/events.tbrec"
  [[ $rank == 0 ]] || file="$run/events.rank$rank.tbrec"
  "$trainbus" replay info "$file" >"$work/info$rank.txt" 2>&1 || { cat "$work/info$rank.txt"; fail "replay info $file"; }
  grep -q "(pid [0-9]*, rank $rank of 2)" "$work/info$rank.txt" || { cat "$work/info$rank.txt"; fail "$file does not name rank $rank of 2"; }
  grep -q "^  train_batch_end: 6$" "$work/info$rank.txt" || { cat "$work/info$rank.txt"; fail "$file does not hold 6 training batches"; }
  # Its events say so too: what an observer on that rank saw (Setup and FitStart carry the rank).
  "$trainbus" replay "$file" --events setup,fit_start >"$work/starts$rank.txt" 2>&1 || { cat "$work/starts$rank.txt"; fail "replay $file"; }
  for event in setup fit_start; do
    grep -q " $event .*global_rank=$rank local_rank=$rank world_size=2$" "$work/starts$rank.txt" ||
      { cat "$work/starts$rank.txt"; fail "$file's $event does not say rank $rank of 2"; }
  done
done

"$trainbus" "${common[@]}" --out "$work/zero" >"$work/fit.log" 2>&1 || fail "the fit without --record-every-rank failed"
recorded=$(cd "$work/zero/version_0" && ls | tr '\n' ' ')
[[ "$recorded" == "events.tbrec " ]] || fail "without --record-every-rank, rank 0 alone records: $recorded"
echo "every rank recorded its own events; without the flag rank 0 alone"
