#!/usr/bin/env bash
# qnn dependency bootstrap: Debian packages, LAMMPS 4Feb2025 (from Debian's trixie
# source package) and Kokkos 3.4.01 (from Debian's bookworm trilinos source package),
# built once into a cache prefix outside the build tree. A second run is a no-op.
#
# Environment:
#   QNN_CACHE          cache prefix (default: $HOME/.cache/qnn)
#   QNN_JOBS           parallel build jobs (default: nproc)
#   LAMMPS_SOURCE_DIR  use this LAMMPS source tree (needs src/ and cmake/) instead of downloading
#   LAMMPS_DIR         use this LAMMPS install prefix (with lib*/liblammps.so) instead of building
#   Kokkos_ROOT        use this Kokkos install prefix instead of building
#   Torch_DIR          use this LibTorch CMake config dir instead of Debian's libtorch-dev
#   QNN_SKIP_APT=1     never call apt-get (you installed the packages yourself)
#   QNN_BOOTSTRAP_PROFILE
#                      full (default): everything the tests, the trainer and the benchmarks use.
#                      demo: only what scripts/demo.sh builds and runs -- no LibTorch, oneDNN,
#                      GoogleTest, HDF5, OpenBLAS or libxsmm packages, and a LAMMPS with the
#                      PLUGIN package only, installed into $QNN_CACHE/lammps-demo (an existing
#                      full LAMMPS build in $QNN_CACHE/lammps is used instead when present).
#                      A later full bootstrap adds the other packages and builds the full LAMMPS
#                      beside it; Kokkos and the sources are shared.
#
# Writes $QNN_CACHE/env.sh, which scripts/build.sh sources to find everything.
set -euo pipefail

QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
QNN_JOBS=${QNN_JOBS:-$(nproc)}
LAMMPS_DEB_VERSION=20250204+dfsg.1-2
LAMMPS_TARBALL=lammps_20250204+dfsg.1.orig.tar.xz
LAMMPS_UPSTREAM_URL=https://download.lammps.org/tars/lammps-4Feb2025.tar.gz
TRILINOS_DEB_SPEC=trilinos/bookworm
TRILINOS_TARBALL=trilinos_13.2.0.orig.tar.gz
KOKKOS_UPSTREAM_URL=https://github.com/kokkos/kokkos/archive/refs/tags/3.4.01.tar.gz

QNN_BOOTSTRAP_PROFILE=${QNN_BOOTSTRAP_PROFILE:-full}
case "$QNN_BOOTSTRAP_PROFILE" in
  full|demo) ;;
  *) echo "[bootstrap] error: QNN_BOOTSTRAP_PROFILE must be full or demo, not '$QNN_BOOTSTRAP_PROFILE'" >&2; exit 1;;
esac
# What the core, the plugin and the demo need ...
APT_PACKAGES=(
  build-essential cmake pkg-config xz-utils dpkg-dev ca-certificates curl
  libopenmpi-dev openmpi-bin
  nlohmann-json3-dev libcli11-dev libfmt-dev
  libxtensor-dev zlib1g-dev
  python3-numpy python3-matplotlib
)
# ... and what the tests, the trainer, the oneDNN/BLAS kernels and HDF5 data add.
if [ "$QNN_BOOTSTRAP_PROFILE" = full ]; then
  APT_PACKAGES+=(
    libtorch-dev
    libgtest-dev
    libdnnl-dev libhdf5-dev
    libopenblas0-openmp libopenblas-openmp-dev libxsmm-dev
  )
fi

mkdir -p "$QNN_CACHE"
T0=$(date +%s)
step_start() { STEP_NAME=$1; STEP_T0=$(date +%s); echo "[bootstrap] $STEP_NAME ..."; }
step_done()  { echo "[bootstrap] $STEP_NAME: $1 ($(( $(date +%s) - STEP_T0 )) s)"; }
die() { echo "[bootstrap] error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages
apt_missing() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

ensure_deb_src() {
  # deb-src for bookworm (trilinos) and trixie (lammps), reusing the machine's own archive URI.
  local f=/etc/apt/sources.list.d/qnn-deb-src.sources uri
  [ -f "$f" ] && return 0
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')
  fi
  [ -n "$uri" ] || die "cannot find the Debian archive URI in /etc/apt; add deb-src lines for bookworm and trixie yourself"
  cat > "$f" <<SRC
Types: deb-src
URIs: $uri
Suites: bookworm trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  APT_UPDATED=0
}

APT_UPDATED=0
apt_update_once() { [ "$APT_UPDATED" = 1 ] || { apt-get update -qq; APT_UPDATED=1; }; }

step_start "Debian packages"
missing=$(apt_missing)
if [ -z "$missing" ]; then
  step_done "all present"
elif [ "${QNN_SKIP_APT:-0}" = 1 ]; then
  die "missing Debian packages: $missing (QNN_SKIP_APT=1 set; install them yourself)"
elif [ "$(id -u)" != 0 ]; then
  die "missing Debian packages: $missing. Run as root, or: sudo apt-get install $missing"
else
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  step_done "installed $missing"
fi

# ---------------------------------------------------------------- sources
fetch_deb_source() {
  # $1 package=version, $2 expected orig tarball, into $QNN_CACHE/src
  local spec=$1 tarball=$2
  mkdir -p "$QNN_CACHE/src"
  [ -f "$QNN_CACHE/src/$tarball" ] && return 0
  if [ "$(id -u)" = 0 ] && [ "${QNN_SKIP_APT:-0}" != 1 ]; then
    ensure_deb_src
    apt_update_once
    # apt-get source exits non-zero when the .dsc answers 404 (trixie lammps): check for the tarball instead.
    (cd "$QNN_CACHE/src" && apt-get source --download-only "$spec" >/dev/null 2>&1) || true
  fi
  if [ ! -f "$QNN_CACHE/src/$tarball" ]; then
    return 1
  fi
}

fetch_url() { # $1 url $2 dest
  command -v curl >/dev/null || return 1
  curl -fL --retry 2 -o "$2.part" "$1" && mv "$2.part" "$2"
}

# ---------------------------------------------------------------- LAMMPS
LAMMPS_SRC=${LAMMPS_SOURCE_DIR:-}
if [ -z "$LAMMPS_SRC" ]; then
  LAMMPS_SRC=$QNN_CACHE/src/lammps-4Feb2025
  step_start "LAMMPS source"
  if [ -f "$LAMMPS_SRC/src/pair.h" ]; then
    step_done "present at $LAMMPS_SRC"
  else
    if fetch_deb_source "lammps=$LAMMPS_DEB_VERSION" "$LAMMPS_TARBALL"; then
      tar -C "$QNN_CACHE/src" -xJf "$QNN_CACHE/src/$LAMMPS_TARBALL"
    elif fetch_url "$LAMMPS_UPSTREAM_URL" "$QNN_CACHE/src/lammps-4Feb2025.tar.gz"; then
      tar -C "$QNN_CACHE/src" -xzf "$QNN_CACHE/src/lammps-4Feb2025.tar.gz"
    else
      die "could not get the LAMMPS 4Feb2025 source (Debian trixie source package or $LAMMPS_UPSTREAM_URL). Set LAMMPS_SOURCE_DIR."
    fi
    [ -f "$LAMMPS_SRC/src/pair.h" ] || die "unpacked LAMMPS source lacks src/pair.h: $LAMMPS_SRC"
    step_done "unpacked to $LAMMPS_SRC"
  fi
fi
[ -f "$LAMMPS_SRC/src/pair.h" ] || die "LAMMPS_SOURCE_DIR=$LAMMPS_SRC has no src/pair.h"

LAMMPS_PREFIX=${LAMMPS_DIR:-}
if [ -z "$LAMMPS_PREFIX" ]; then
  LAMMPS_BASE_OPTS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=on -DBUILD_MPI=on -DBUILD_OMP=on -DLAMMPS_EXCEPTIONS=on -DPKG_PLUGIN=on"
  LAMMPS_TAIL_OPTS="-DWITH_JPEG=off -DWITH_PNG=off -DWITH_FFMPEG=off -DWITH_GZIP=off -DCMAKE_INSTALL_LIBDIR=lib"
  # The full build adds the packages of the long benchmark report (SNAP, ML-IAP for scale) and
  # of the analysis inputs; the demo needs only PLUGIN.
  LAMMPS_FULL_OPTS="$LAMMPS_BASE_OPTS -DPKG_MANYBODY=on -DPKG_ML-SNAP=on -DPKG_ML-IAP=on -DPKG_EXTRA-FIX=on -DPKG_EXTRA-COMPUTE=on -DMLIAP_ENABLE_PYTHON=off $LAMMPS_TAIL_OPTS"
  LAMMPS_PREFIX=$QNN_CACHE/lammps
  LAMMPS_OPTS=$LAMMPS_FULL_OPTS
  if [ "$QNN_BOOTSTRAP_PROFILE" = demo ] && ! { [ -f "$LAMMPS_PREFIX/.qnn-stamp" ] \
       && [ "$(cat "$LAMMPS_PREFIX/.qnn-stamp")" = "$LAMMPS_FULL_OPTS $LAMMPS_SRC" ]; }; then
    LAMMPS_PREFIX=$QNN_CACHE/lammps-demo
    LAMMPS_OPTS="$LAMMPS_BASE_OPTS $LAMMPS_TAIL_OPTS"
  fi
  stamp=$LAMMPS_PREFIX/.qnn-stamp
  step_start "LAMMPS build ($( [ "$LAMMPS_OPTS" = "$LAMMPS_FULL_OPTS" ] && echo "full" || echo "PLUGIN package only, for the demo"))"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$LAMMPS_OPTS $LAMMPS_SRC" ]; then
    step_done "cached at $LAMMPS_PREFIX"
  else
    rm -rf "$QNN_CACHE/build-lammps" "$LAMMPS_PREFIX"
    cmake -S "$LAMMPS_SRC/cmake" -B "$QNN_CACHE/build-lammps" -DCMAKE_INSTALL_PREFIX="$LAMMPS_PREFIX" $LAMMPS_OPTS > "$QNN_CACHE/lammps-configure.log" 2>&1 \
      || { tail -n 40 "$QNN_CACHE/lammps-configure.log"; die "LAMMPS configure failed (log: $QNN_CACHE/lammps-configure.log)"; }
    cmake --build "$QNN_CACHE/build-lammps" -j "$QNN_JOBS" > "$QNN_CACHE/lammps-build.log" 2>&1 \
      || { tail -n 40 "$QNN_CACHE/lammps-build.log"; die "LAMMPS build failed (log: $QNN_CACHE/lammps-build.log)"; }
    cmake --install "$QNN_CACHE/build-lammps" > /dev/null
    rm -rf "$QNN_CACHE/build-lammps"
    echo "$LAMMPS_OPTS $LAMMPS_SRC" > "$stamp"
    step_done "built into $LAMMPS_PREFIX"
  fi
fi
[ -e "$LAMMPS_PREFIX/lib/liblammps.so" ] || [ -e "$LAMMPS_PREFIX/lib64/liblammps.so" ] \
  || die "no liblammps.so under LAMMPS_DIR=$LAMMPS_PREFIX (LAMMPS must be built with -DBUILD_SHARED_LIBS=on -DPKG_PLUGIN=on)"

# ---------------------------------------------------------------- Kokkos
KOKKOS_PREFIX=${Kokkos_ROOT:-}
if [ -z "$KOKKOS_PREFIX" ]; then
  KOKKOS_PREFIX=$QNN_CACHE/kokkos
  KOKKOS_SRC=$QNN_CACHE/src/kokkos-3.4.01
  KOKKOS_OPTS="-DCMAKE_BUILD_TYPE=Release -DKokkos_ENABLE_SERIAL=ON -DKokkos_ENABLE_OPENMP=ON -DBUILD_SHARED_LIBS=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_CXX_STANDARD=17 -DCMAKE_INSTALL_LIBDIR=lib"
  stamp=$KOKKOS_PREFIX/.qnn-stamp
  step_start "Kokkos 3.4.01"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$KOKKOS_OPTS" ]; then
    step_done "cached at $KOKKOS_PREFIX"
  else
    if [ ! -f "$KOKKOS_SRC/CMakeLists.txt" ]; then
      if fetch_deb_source "$TRILINOS_DEB_SPEC" "$TRILINOS_TARBALL"; then
        top=$(set +o pipefail; tar -tzf "$QNN_CACHE/src/$TRILINOS_TARBALL" | head -n1 | cut -d/ -f1)
        tar -C "$QNN_CACHE/src" -xzf "$QNN_CACHE/src/$TRILINOS_TARBALL" "$top/packages/kokkos"
        rm -rf "$KOKKOS_SRC"; mv "$QNN_CACHE/src/$top/packages/kokkos" "$KOKKOS_SRC"; rm -rf "$QNN_CACHE/src/$top"
      elif fetch_url "$KOKKOS_UPSTREAM_URL" "$QNN_CACHE/src/kokkos-3.4.01.tar.gz"; then
        tar -C "$QNN_CACHE/src" -xzf "$QNN_CACHE/src/kokkos-3.4.01.tar.gz"
      else
        die "could not get Kokkos 3.4.01 (Debian bookworm trilinos source package or $KOKKOS_UPSTREAM_URL). Set Kokkos_ROOT."
      fi
    fi
    rm -rf "$QNN_CACHE/build-kokkos" "$KOKKOS_PREFIX"
    cmake -S "$KOKKOS_SRC" -B "$QNN_CACHE/build-kokkos" -DCMAKE_INSTALL_PREFIX="$KOKKOS_PREFIX" $KOKKOS_OPTS > "$QNN_CACHE/kokkos-build.log" 2>&1 \
      && cmake --build "$QNN_CACHE/build-kokkos" -j "$QNN_JOBS" >> "$QNN_CACHE/kokkos-build.log" 2>&1 \
      && cmake --install "$QNN_CACHE/build-kokkos" >> "$QNN_CACHE/kokkos-build.log" 2>&1 \
      || { tail -n 40 "$QNN_CACHE/kokkos-build.log"; die "Kokkos build failed (log: $QNN_CACHE/kokkos-build.log)"; }
    rm -rf "$QNN_CACHE/build-kokkos"
    echo "$KOKKOS_OPTS" > "$stamp"
    step_done "built into $KOKKOS_PREFIX"
  fi
fi

# ---------------------------------------------------------------- LibTorch, CUDA
TORCH_CMAKE_DIR=${Torch_DIR:-}
if [ -z "$TORCH_CMAKE_DIR" ]; then
  for d in /usr/share/cmake/Torch /usr/lib/x86_64-linux-gnu/cmake/Torch /usr/lib/cmake/Torch; do
    [ -f "$d/TorchConfig.cmake" ] && TORCH_CMAKE_DIR=$d && break
  done
fi
[ -n "$TORCH_CMAKE_DIR" ] || echo "[bootstrap] note: no LibTorch found; qnn builds without the trainer and the LibTorch reference"
CUDA_HOME_FOUND=""
[ -x /usr/local/cuda/bin/nvcc ] && CUDA_HOME_FOUND=/usr/local/cuda

cat > "$QNN_CACHE/env.sh" <<ENV
# written by qnn scripts/bootstrap.sh
export QNN_CACHE="$QNN_CACHE"
export QNN_LAMMPS_SOURCE_DIR="$LAMMPS_SRC"
export QNN_LAMMPS_DIR="$LAMMPS_PREFIX"
export QNN_KOKKOS_ROOT="$KOKKOS_PREFIX"
export QNN_TORCH_DIR="$TORCH_CMAKE_DIR"
export QNN_CUDA_HOME="$CUDA_HOME_FOUND"
export PATH="$LAMMPS_PREFIX/bin:\$PATH"
export LD_LIBRARY_PATH="$LAMMPS_PREFIX/lib:$KOKKOS_PREFIX/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
echo "[bootstrap] done in $(( $(date +%s) - T0 )) s; environment in $QNN_CACHE/env.sh"
