#!/usr/bin/env bash
# Every C source and header tracked by git is formatted with the project's
# .clang-format. Prints the first differences and fails otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "SKIP: not a git checkout: cannot list the sources"
  exit 77
fi
mapfile -t files < <(git ls-files '*.c' '*.h')
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/format-check.$$; then
  head -n 40 /tmp/format-check.$$ >&2
  rm -f /tmp/format-check.$$
  echo "format-check: run clang-format -i on the files above" >&2
  exit 1
fi
rm -f /tmp/format-check.$$
echo "format-check: ${#files[@]} files formatted"
