#!/usr/bin/env bash
# Formats every C++ file under version control with the repository's .clang-format (clang-format 14,
# Debian 12's), or, with --check, lists the files that differ and fails without changing them.
#
#   scripts/format.sh           reformat in place
#   scripts/format.sh --check   what scripts/test.sh runs
set -euo pipefail
cd "$(dirname "$0")/.."

command -v clang-format >/dev/null || { echo "format: clang-format missing; run scripts/setup.sh" >&2; exit 1; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.h' '*.cpp')
else  # a copy without .git (an unpacked archive): the sources, not build trees
  mapfile -t files < <(find . -path './build*' -prune -o \( -name '*.h' -o -name '*.cpp' \) -print | sort)
fi
if [[ ${1:-} == --check ]]; then
  if ! clang-format --dry-run --Werror "${files[@]}" 2>/dev/null; then
    echo "format: these files differ from .clang-format; run scripts/format.sh and commit:" >&2
    for file in "${files[@]}"; do
      clang-format --dry-run --Werror "$file" >/dev/null 2>&1 || echo "  $file" >&2
    done
    exit 1
  fi
else
  clang-format -i "${files[@]}"
fi
