# Sourced by the launcher's fault tests (kill_rank.sh, hang_rank.sh), which set $trainbus.

# children_of LAUNCHER_PID [RANK] prints the launcher's children (read from /proc: no procps on a
# minimal system); with a RANK, the one with that RANK.
children_of() {
  local status_file pid
  for status_file in /proc/[0-9]*/status; do
    pid=${status_file#/proc/}; pid=${pid%/status}
    [[ $(awk '/^PPid:/ {print $2}' "$status_file" 2>/dev/null) == "$1" ]] || continue
    if [[ -z ${2:-} ]] || tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RANK=$2"; then
      echo "$pid"
    fi
  done
}

# start_until_checkpoint LOG RUN_DIR ARGS...: starts `$trainbus ARGS` in the background (its pid
# in $launcher) and waits, at most 60 s, for RUN_DIR's first checkpoint: the end of the first
# epoch, so that what the test does next lands in a later one. Fails the test without one.
start_until_checkpoint() {
  local log=$1 run=$2
  shift 2
  "$trainbus" "$@" >"$log" 2>&1 &
  launcher=$!
  for _ in $(seq 600); do
    [[ -e "$run/checkpoints/last.ckpt" ]] && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  [[ -e "$run/checkpoints/last.ckpt" ]] || { cat "$log"; echo "FAILED: no checkpoint"; exit 1; }
}

# resume_completes LOG ARGS...: `$trainbus ARGS --resume last` resumes and runs to its test line.
resume_completes() {
  local log=$1 status=0
  shift
  "$trainbus" "$@" --resume last >"$log" 2>&1 || status=$?
  echo "--- resumed, exit $status"; cat "$log"
  [[ $status -eq 0 ]] || { echo "FAILED: the resumed run failed"; exit 1; }
  grep -q "^resumed from: " "$log" || { echo "FAILED: it did not resume"; exit 1; }
  grep -q "^test  test_acc" "$log" || { echo "FAILED: no test line"; exit 1; }
}
