#!/usr/bin/env bash
# `trainbus fit --callback model_checkpoint:...` saves with that callback only: fit's own
# checkpoints (--out/checkpoints) are left out, as Lightning leaves out its default ModelCheckpoint
# when one is given. With --no-checkpoint the same callback is refused, naming both.
#
#   tests/apps/checkpoint_callback_replaces_own.sh TRAINBUS_BINARY WORK_DIR
set -euo pipefail
trainbus=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
common=(fit --max-epochs 1 --limit-train-batches 10 --limit-val-batches 2 --limit-test-batches 2
        --no-progress-bar --no-model-summary --no-record --no-csv --no-tensorboard --out "$work/run")
fail() { cat "$work/fit.log"; echo "FAILED: $1"; exit 1; }

"$trainbus" "${common[@]}" \
  --callback "model_checkpoint:monitor=val_loss,dirpath=$work/mine,filename={epoch}-{val_loss:.3f}" \
  >"$work/fit.log" 2>&1 || fail "the fit with a checkpoint callback failed"
ls "$work"/mine/epoch=0-val_loss=*.ckpt >/dev/null 2>&1 || fail "no checkpoint in $work/mine"
[[ ! -e "$work/run/checkpoints" ]] || fail "fit's own checkpoints were saved too: $(ls "$work/run/checkpoints")"
grep -q "^checkpoints: $work/mine\$" "$work/fit.log" || fail "the checkpoint directory is not reported"

if "$trainbus" "${common[@]}" --no-checkpoint --callback "model_checkpoint:monitor=val_loss" \
  >"$work/fit.log" 2>&1; then
  fail "--no-checkpoint with a checkpoint callback was accepted"
fi
grep -q -- "--no-checkpoint turns checkpoints off, but --callback 'model_checkpoint:monitor=val_loss' saves them" \
  "$work/fit.log" || fail "the refusal does not name both flags"
echo "PASSED"
