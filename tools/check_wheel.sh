#!/usr/bin/env bash
# Installs a built pyretro wheel into a fresh venv per torch release and smoke-tests it there with no
# compiler reachable (tools/wheel_smoke.py: `pyretro info`, fused CCA vs reference, chunk store round trip).
#
#   tools/check_wheel.sh WHEEL [--torch VERSION]... [--find-links DIR] [--expect-cuda 0|1] [--bench] [--keep]
#
#   --torch VERSION    torch release to install beside the wheel (repeatable; default 2.13.0). One venv each.
#   --find-links DIR   extra local wheel directory (e.g. a wheelhouse holding another torch and its deps,
#                      filled once with `pip download -d DIR torch==2.12.0`)
#   --expect-cuda 0|1  fail unless `pyretro info` reports cuda_compiled accordingly
#   --bench            also run `pyretro bench kernels --quick` from the installed package
#   --keep             keep the venvs (printed) instead of deleting them
# Installs: torch==VERSION, then the wheel with its declared runtime dependencies, binaries only
# (--only-binary :all:, so pip can never fall back to building anything). Exit status 0 = every venv passed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY=${PYTHON:-python3}
wheel="" torches=() links=() smoke_args=() keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --torch) torches+=("$2"); shift 2 ;;
    --find-links) links+=(--find-links "$(realpath "$2")"); shift 2 ;;
    --expect-cuda) smoke_args+=(--expect-cuda "$2"); shift 2 ;;
    --bench) smoke_args+=(--bench); shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "check_wheel.sh: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$wheel" ] || { echo "check_wheel.sh: one wheel at a time" >&2; exit 2; }; wheel=$1; shift ;;
  esac
done
[ -n "$wheel" ] || { echo "usage: tools/check_wheel.sh WHEEL [--torch VERSION]..." >&2; exit 2; }
[ -f "$wheel" ] || { echo "check_wheel.sh: no such wheel: $wheel" >&2; exit 2; }
wheel=$(realpath "$wheel")
[ ${#torches[@]} -gt 0 ] || torches=(2.13.0)
version=$(basename "$wheel" | cut -d- -f2)
smoke_args+=(--expect-version "$version")

work=$(mktemp -d /tmp/pyretro-wheelcheck.XXXXXX)
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
status=0
for tv in "${torches[@]}"; do
  venv="$work/venv-torch-$tv"
  echo "== torch $tv: fresh venv $venv"
  t0=$(date +%s)
  "$PY" -m venv "$venv"
  # Nothing below may find a compiler: only the venv's bin on PATH, CC & co. pointing at /bin/false.
  # PYTHONPATH/PYTHONUSERBASE are dropped and the cwd is the empty work dir, so no source tree is imported.
  run() { (cd "$work" && env -u PYTHONPATH -u PYRETRO_C_PATH PYTHONNOUSERSITE=1 PATH="$venv/bin" \
           CC=/bin/false CXX=/bin/false CUDACXX=/bin/false "$@"); }
  pip=(run "$venv/bin/python" -m pip install -q --no-compile --only-binary :all: --disable-pip-version-check "${links[@]}")
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }  # local-index noise
  if ! quiet "${pip[@]}" "torch==$tv" || ! quiet "${pip[@]}" "$wheel" "torch==$tv"; then
    echo "== torch $tv: INSTALL FAILED" >&2; status=1; continue
  fi
  t1=$(date +%s)
  if run "$venv/bin/python" "$here/wheel_smoke.py" "${smoke_args[@]}"; then
    echo "== torch $tv: PASS (install $((t1 - t0)) s, smoke $(( $(date +%s) - t1 )) s, venv $(du -sm "$venv" | cut -f1) MB)"
  else
    echo "== torch $tv: SMOKE TEST FAILED" >&2; status=1
  fi
done
[ "$keep" = 1 ] && echo "venvs kept in $work"
exit $status
