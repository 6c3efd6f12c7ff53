#!/usr/bin/env bash
# `trainbus fit --callback model_checkpoint:...` saves with that callback only: fit's own
# checkpoints are left out, as Lightning leaves out its default ModelCheckpoint when one is given.
# Without a dirpath it saves in --out/checkpoints, where --resume last finds it; with one, there.
# With --no-checkpoint a checkpoint callback is refused, naming both.
#
#   tests/apps/checkpoint_callback_replaces_own.sh TRAINBUS_BINARY WORK_DIR
set -euo pipefail
trainbus=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
common=(fit --limit-train-batches 10 --limit-val-batches 2 --limit-test-batches 2
        --no-progress-bar --no-model-summary --no-record --no-csv --no-tensorboard)
fail() { cat "$work/fit.log"; echo "FAILED: $1"; exit 1; }

# A dirpath of its own: nothing in --out/checkpoints.
"$trainbus" "${common[@]}" --max-epochs 1 --out "$work/named" \
  --callback "model_checkpoint:monitor=val_loss,dirpath=$work/mine,filename={epoch}-{val_loss:.3f}" \
  >"$work/fit.log" 2>&1 || fail "the fit with a checkpoint callback failed"
ls "$work"/mine/epoch=0-val_loss=*.ckpt >/dev/null 2>&1 || fail "no checkpoint in $work/mine"
[[ ! -e "$work/named/checkpoints" ]] || fail "fit's own checkpoints were saved too: $(ls "$work/named/checkpoints")"
grep -q "^checkpoints: $work/mine\$" "$work/fit.log" || fail "the checkpoint directory is not reported"

# No dirpath: fit's directory, its files only; --resume last continues from them.
"$trainbus" "${common[@]}" --max-epochs 1 --out "$work/unnamed" \
  --callback "model_checkpoint:monitor=val_loss,save_last=true" \
  >"$work/fit.log" 2>&1 || fail "the fit with a checkpoint callback without dirpath failed"
saved=$(cd "$work/unnamed/checkpoints" && ls | sort | tr '\n' ' ')
[[ "$saved" == "epoch=0-step=10.ckpt last.ckpt " ]] || fail "unexpected checkpoints: $saved"
"$trainbus" "${common[@]}" --max-epochs 2 --out "$work/unnamed" --resume last \
  --callback "model_checkpoint:monitor=val_loss,save_last=true" \
  >"$work/fit.log" 2>&1 || fail "--resume last with the callback's checkpoints failed"
grep -q "^resumed from: $work/unnamed/checkpoints/.*ckpt" "$work/fit.log" || fail "not resumed from the callback's checkpoints"

if "$trainbus" "${common[@]}" --max-epochs 1 --out "$work/refused" --no-checkpoint \
  --callback "model_checkpoint:monitor=val_loss" >"$work/fit.log" 2>&1; then
  fail "--no-checkpoint with a checkpoint callback was accepted"
fi
grep -q -- "--no-checkpoint turns checkpoints off, but --callback 'model_checkpoint:monitor=val_loss' saves them" \
  "$work/fit.log" || fail "the refusal does not name both flags"
echo "PASSED"
