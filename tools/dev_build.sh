#!/usr/bin/env bash
# In-place developer build: compiles pyretro._C into build/dev and links it into pyretro/, so the
# source tree imports directly (python -m pytest). Serialized with flock: several shells may call it.
#   tools/dev_build.sh            # CPU only (fast)
#   PYRETRO_CUDA=AUTO tools/dev_build.sh   # also compile the CUDA kernels (checks they compile)
#   PYRETRO_SANITIZE='address;undefined' BUILD_DIR=build/asan tools/dev_build.sh --no-link
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/dev}
mkdir -p "$BUILD_DIR"
exec 9>"$BUILD_DIR/.lock"
flock 9
PY=${PYTHON:-python}
if [ ! -f "$BUILD_DIR/build.ninja" ] || [ "${RECONFIGURE:-0}" = 1 ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
    -DPYRETRO_CUDA="${PYRETRO_CUDA:-OFF}" -DPYRETRO_SANITIZE="${PYRETRO_SANITIZE:-}" -DPYRETRO_CUDA_ARCHS="${PYRETRO_CUDA_ARCHS:-80;90}" \
    -DPython_EXECUTABLE="$(command -v $PY)" -Dpybind11_DIR="$($PY -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
    -DSKBUILD_PROJECT_VERSION="$($PY -c 'exec(open("pyretro/_version.py").read()); print(__version__)')" >/dev/null
fi
cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
so=$(ls "$BUILD_DIR"/_C*.so)
if [ "${1:-}" != "--no-link" ]; then
  ln -sf "$(realpath "$so")" "pyretro/$(basename "$so")"
fi
echo "$so"
