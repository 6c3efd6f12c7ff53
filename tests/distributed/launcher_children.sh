# Sourced by the launcher's script tests: children_of LAUNCHER_PID [RANK] prints the launcher's
# children (read from /proc: no procps on a minimal system); with a RANK, the one with that RANK.
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
