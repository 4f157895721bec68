#!/usr/bin/env bash
# Mutation testing of one module against the tests that guard it (docs/testing.md).
#   tests/mutation.sh fetcher/download/guards.py tests/test_mutations_caught.py tests/test_download.py
# Runs mutmut (pip install mutmut) niced, in a copy of the repository under $TMPDIR, so the
# working tree is never touched; prints the survivors and the score. CPU-heavy: one module at a time.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 MODULE.py TEST_FILE... " >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
module="$1"; shift
work="$(mktemp -d "${TMPDIR:-/tmp}/fetcher-mutation.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r "$root/fetcher" "$root/tests" "$root/pyproject.toml" "$work/"
{
  echo "[mutmut]"
  echo "source_paths = fetcher"
  echo "only_mutate = $module"
  echo "pytest_add_cli_args_test_selection ="
  printf '    %s\n' "$@"
  echo "pytest_add_cli_args ="
  printf '    %s\n' -x -q -p no:cacheprovider
} > "$work/setup.cfg"
cd "$work"
nice -n 19 "$python" -m mutmut run --max-children "${JOBS:-1}" > run.log 2>&1 || true
if grep -q "Failed to run clean test" run.log; then
  echo "$module: not scored: the selected tests fail before any mutation, under mutmut:" >&2
  grep -E "^(FAILED|E  )" run.log | head -5 >&2
  exit 1
fi
nice -n 19 "$python" -m mutmut results --all true > results.txt 2>&1 || true
killed=$(grep -c ': killed' results.txt || true)
survived=$(grep -c ': survived' results.txt || true)
other=$(grep -vc ': killed\|: survived' results.txt || true)
grep ': survived' results.txt || true
total=$((killed + survived))
echo "$module: $killed killed, $survived survived, $other other (timeouts, no tests) -> score $(( total ? 100 * killed / total : 0 ))%"
