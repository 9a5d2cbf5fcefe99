#!/usr/bin/env bash
# Install test (issue 17): `cmake --install` of a build into a fresh prefix, then use only
# what was installed:
#   (a) LAMMPS run from another directory with LAMMPS_PLUGIN_PATH=PREFIX/lib/qnn/plugins and no
#       `plugin load` line: pair_style qnn must be there and print a finite energy;
#   (b) tests/install_consumer, a CMake project with find_package(qnn REQUIRED), configured,
#       built and run: it reads potentials/water-se2a.fp32.qnn through the installed headers
#       and library and must print its species (O H).
# Also: every installed file is where docs say, the package does not point into the source
# or build tree, and the installed tool and plugin find Kokkos without LD_LIBRARY_PATH.
# Any failure exits non-zero (PASS/FAIL lines say which step).
#
# usage: install_test.sh BUILD_DIR WORK_DIR
# environment: QNN_SOURCE_DIR (checkout), LMP (LAMMPS executable), LAMMPS_LIBDIR (the directory
# of liblammps.so; default: LMP's ../lib), CMAKE_COMMAND (default cmake), CXX (compiler for
# the consumer).
set -euo pipefail
BUILD=${1:?usage: install_test.sh BUILD_DIR WORK_DIR}
WORK=${2:?usage: install_test.sh BUILD_DIR WORK_DIR}
SRC=${QNN_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
CMAKE=${CMAKE_COMMAND:-cmake}
LMP=${LMP:-lmp}
MODEL=$SRC/potentials/water-se2a.fp32.qnn
DATA=$SRC/examples/water/water.data

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }

rm -rf "$WORK"
mkdir -p "$WORK"
PREFIX=$WORK/prefix

# ---- install
"$CMAKE" --install "$BUILD" --prefix "$PREFIX" > "$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log"; fail "cmake --install $BUILD --prefix $PREFIX"; }
for f in bin/qnn lib/qnn/plugins/qnnplugin.so lib/libqnn_core.a \
         include/qnn/format/model.hpp include/qnn/error.hpp include/qnn/engine/evaluator.hpp \
         lib/cmake/qnn/qnnConfig.cmake lib/cmake/qnn/qnnConfigVersion.cmake lib/cmake/qnn/qnnTargets.cmake; do
  [ -f "$PREFIX/$f" ] || fail "not installed: PREFIX/$f"
done
n_src=$(cd "$SRC/src" && find qnn -name '*.hpp' -not -path 'qnn/import/*' -not -path 'qnn/cuda/*' | wc -l)
n_inst=$(cd "$PREFIX/include" && find qnn -name '*.hpp' | wc -l)
[ "$n_src" -eq "$n_inst" ] || fail "installed $n_inst headers, the core has $n_src"
if grep -rq -e "$SRC/src" -e "$(cd "$BUILD" && pwd)" "$PREFIX/lib/cmake/qnn"; then
  grep -rn -e "$SRC/src" -e "$(cd "$BUILD" && pwd)" "$PREFIX/lib/cmake/qnn" >&2
  fail "the installed CMake package points into the source or build tree"
fi
pass "installed into $PREFIX ($n_inst headers)"

# The installed tool runs without LD_LIBRARY_PATH (its run path finds Kokkos).
env -u LD_LIBRARY_PATH "$PREFIX/bin/qnn" info "$MODEL" > "$WORK/qnn-info.log" 2>&1 \
  || { cat "$WORK/qnn-info.log"; fail "installed qnn info (without LD_LIBRARY_PATH)"; }
pass "installed qnn runs: $(grep -m1 -i species "$WORK/qnn-info.log" || head -1 "$WORK/qnn-info.log")"

# ---- (a) LAMMPS picks the plugin up from LAMMPS_PLUGIN_PATH
RUN=$WORK/lammps-run
mkdir -p "$RUN"
cat > "$RUN/in.water" <<IN
# no plugin load: LAMMPS_PLUGIN_PATH provides pair_style qnn
units        metal
atom_style   atomic
atom_modify  map array
read_data    $DATA
pair_style   qnn $MODEL
pair_coeff   * * O H
velocity     all create 300.0 4928459 mom yes rot yes dist gaussian
timestep     0.0005
fix          integrate all nve
thermo_style custom step temp pe etotal
thermo_modify norm yes
thermo       5
run          10
variable     e equal etotal
print        "QNN_INSTALL_ETOTAL \${e}"
IN
LAMMPS_LIB=${LAMMPS_LIBDIR:-$(cd "$(dirname "$(command -v "$LMP")")/../lib" && pwd)}
# Only liblammps on the library path (lmp itself has no run path); the plugin finds the rest.
(cd "$RUN" && env -u LD_LIBRARY_PATH LD_LIBRARY_PATH="$LAMMPS_LIB" LAMMPS_PLUGIN_PATH="$PREFIX/lib/qnn/plugins" \
   OMP_NUM_THREADS=1 "$LMP" -in in.water -log log.lammps -screen none) \
  || { tail -30 "$RUN/log.lammps" >&2 || true; fail "LAMMPS run with LAMMPS_PLUGIN_PATH"; }
grep -q "Loaded 1 plugins from $PREFIX/lib/qnn/plugins" "$RUN/log.lammps" \
  || { tail -30 "$RUN/log.lammps" >&2; fail "LAMMPS did not load qnnplugin.so from LAMMPS_PLUGIN_PATH"; }
etot=$(awk '$1 == "QNN_INSTALL_ETOTAL" {print $2}' "$RUN/log.lammps")
[[ "$etot" =~ ^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$ ]] \
  || { tail -30 "$RUN/log.lammps" >&2; fail "no finite total energy from pair_style qnn (got '$etot')"; }
pass "LAMMPS with LAMMPS_PLUGIN_PATH only: pair_style qnn, etotal $etot eV/atom"

# ---- (b) a CMake project with find_package(qnn REQUIRED)
CB=$WORK/consumer-build
env -u CMAKE_PREFIX_PATH -u Kokkos_ROOT -u Kokkos_DIR "$CMAKE" -S "$SRC/tests/install_consumer" -B "$CB" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
  ${CXX:+-DCMAKE_CXX_COMPILER="$CXX"} > "$WORK/consumer-configure.log" 2>&1 \
  || { cat "$WORK/consumer-configure.log" >&2; fail "configure of tests/install_consumer (find_package(qnn))"; }
grep -q "qnn 0.*from $PREFIX/lib/cmake/qnn" "$WORK/consumer-configure.log" \
  || { cat "$WORK/consumer-configure.log" >&2; fail "find_package(qnn) did not find the installed package"; }
"$CMAKE" --build "$CB" -j 1 > "$WORK/consumer-build.log" 2>&1 \
  || { cat "$WORK/consumer-build.log" >&2; fail "build of tests/install_consumer"; }
pass "consumer configured and built against $PREFIX"
env -u LD_LIBRARY_PATH "$CB/qnn_consumer" "$MODEL" > "$WORK/consumer-run.log" 2>&1 \
  || { cat "$WORK/consumer-run.log" >&2; fail "qnn_consumer $MODEL"; }
cat "$WORK/consumer-run.log"
grep -qx "species: O H" "$WORK/consumer-run.log" || fail "qnn_consumer did not print 'species: O H'"
pass "consumer read $(basename "$MODEL") through the installed headers"
echo "PASS"
