#!/usr/bin/env bash
# One command for the energy-conservation / fidelity / throughput report of pair_style qnn.
#   examples/benchmarks/run_report.sh [--short|--long] [--out DIR] [report.py options...]
# Environment: QNN_BUILD_DIR (plugin = $QNN_BUILD_DIR/qnnplugin.so, default build/),
# LMP (LAMMPS executable, default lmp from ~/.cache/qnn/env.sh), MPIRUN, QNN_PYTHON
# (default /usr/bin/python3: the Debian interpreter that has numpy and matplotlib).
# `run_report.sh --help` lists every option (lengths, modes, potential files).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ENV_SH=${QNN_CACHE:-$HOME/.cache/qnn}/env.sh
# shellcheck disable=SC1090
if [ -f "$ENV_SH" ]; then source "$ENV_SH"; fi
export QNN_BUILD_DIR=${QNN_BUILD_DIR:-$ROOT/build}
export LMP=${LMP:-lmp}
PY=${QNN_PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import numpy, matplotlib' 2>/dev/null; then
  echo "[report] error: $PY lacks numpy/matplotlib (apt-get install python3-numpy python3-matplotlib, or set QNN_PYTHON)" >&2
  exit 2
fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
exec "$PY" "$HERE/report.py" "$@"
