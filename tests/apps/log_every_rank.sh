#!/usr/bin/env bash
# `trainbus fit --nproc-per-node 2 --log-every-rank`: each rank writes its own logs, rank 0's in
# the run directory, rank 1's in rank_1/ under it (metrics.csv, hparams.yaml, a TensorBoard event
# file: a whole log directory of its own), each with rows for its own batches. Without the flag
# rank 0 alone logs.
#
#   tests/apps/log_every_rank.sh TRAINBUS_BINARY WORK_DIR MASTER_PORT
set -euo pipefail
trainbus=$1
work=$2
port=$3
rm -rf "$work" && mkdir -p "$work"
common=(fit --nproc-per-node 2 --master-port "$port" --ddp-timeout 60 --max-epochs 1 --limit-train-batches 6
        --limit-val-batches 2 --limit-test-batches 2 --log-every-n-steps 1 --no-progress-bar
        --no-model-summary --no-checkpoint --no-record)
fail() { cat "$work/fit.log"; echo "FAILED: $1"; exit 1; }
names() { (cd "$1" && ls | sed 's/^events\.out\.tfevents\..*/events.out.tfevents.*/' | sort | tr '\n' ' '); }

"$trainbus" "${common[@]}" --out "$work/every" --log-every-rank >"$work/fit.log" 2>&1 ||
  fail "the fit with --log-every-rank failed"
run="$work/every/version_0"
[[ "$(names "$run")" == "events.out.tfevents.* hparams.yaml metrics.csv rank_1 " ]] ||
  fail "unexpected files in $run: $(names "$run")"
[[ "$(names "$run/rank_1")" == "events.out.tfevents.* hparams.yaml metrics.csv " ]] ||
  fail "unexpected files in $run/rank_1: $(names "$run/rank_1")"
grep -qxF "logs: $run (rank 0; rank R's in rank_R under it)" "$work/fit.log" ||
  fail "the logs are not reported"
for dir in "$run" "$run/rank_1"; do
  # One row per training step (--log-every-n-steps 1), each with the step's loss.
  rows=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) if ($i == "train_loss_step") c = i; next }
                  c && $c != "" { ++n } END { print n + 0 }' "$dir/metrics.csv")
  [[ $rows == 6 ]] || { cat "$dir/metrics.csv"; fail "$dir/metrics.csv holds $rows training steps, not 6"; }
  grep -q "^lr: " "$dir/hparams.yaml" || fail "$dir/hparams.yaml has no lr"
done
# One run directory for both ranks (rank 0 picks the version), and each rank's own rows: the
# ranks train on different shards, so their losses differ.
[[ "$(names "$work/every")" == "version_0 " ]] || fail "more than one run: $(names "$work/every")"
! cmp -s "$run/metrics.csv" "$run/rank_1/metrics.csv" || fail "rank 1 logged rank 0's rows"

"$trainbus" "${common[@]}" --out "$work/zero" >"$work/fit.log" 2>&1 || fail "the fit without --log-every-rank failed"
[[ "$(names "$work/zero/version_0")" == "events.out.tfevents.* hparams.yaml metrics.csv " ]] ||
  fail "without --log-every-rank, rank 0 alone logs: $(names "$work/zero/version_0")"
grep -qxF "logs: $work/zero/version_0" "$work/fit.log" || fail "the logs are not reported"
echo "every rank wrote its own logs; without the flag rank 0 alone"
