#!/usr/bin/env bash
# Bitwise determinism of whole trajectories (issue 25): 500 NVE steps of the 192-atom water box
# from one data file with velocities, in every execution mode of the shipped files, on 1, 2 and
# 3 MPI ranks with one thread and on 1 rank with 2 OpenMP threads; the final positions,
# velocities and forces (sorted by atom id, every digit of the doubles) must be identical.
#
# The start is written once (1 rank) with write_data, so that no run depends on `velocity
# create`, whose own MPI reduction rounds differently on different rank counts.
#
# Usage: determinism_test.sh LMP PLUGIN REPO_DIR [MPIEXEC]
set -euo pipefail
LMP=${1:?lmp binary}
PLUGIN=${2:?qnnplugin.so}
ROOT=${3:?repository}
MPIEXEC=${4:-mpirun}
STEPS=${QNN_DETERMINISM_STEPS:-500}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_WAIT_POLICY=passive
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
POT="$ROOT/potentials"

cat > "$W/in.start" <<EOF
units metal
atom_style atomic
atom_modify map array
read_data $ROOT/examples/water/water.data
velocity all create 300.0 4928459 mom yes rot yes dist gaussian
write_data $W/start.data
EOF
OMP_NUM_THREADS=1 "$LMP" -in "$W/in.start" -log none -screen none -nocite

# run NAME NP THREADS MODE FILE
run() {
  local name=$1 np=$2 nt=$3 mode=$4 file=$5
  cat > "$W/in.$name" <<EOF
plugin load $PLUGIN
units metal
atom_style atomic
atom_modify map array
read_data $W/start.data
pair_style qnn $POT/$file mode $mode threads $nt
pair_coeff * * O H
neighbor 1.0 bin
timestep 0.0005
fix nve all nve
thermo 100
run $STEPS
write_dump all custom $W/$name.dump id x y z vx vy vz fx fy fz modify sort id format float %.17g
EOF
  OMP_NUM_THREADS=$nt "$MPIEXEC" -np "$np" "$LMP" -in "$W/in.$name" -log none -screen none -nocite \
    > "$W/$name.out" 2>&1 || { echo "FAILED to run $name:"; tail -20 "$W/$name.out"; return 1; }
}

status=0
for spec in fp32:water-se2a.fp32.qnn weight-only:water-se2a.int8.qnn w8a16:water-se2a.int8.qnn \
            int8:water-se2a.int8.qnn mixed:water-se2a.mixed.qnn; do
  mode=${spec%%:*}
  file=${spec#*:}
  run "$mode-np1" 1 1 "$mode" "$file"
  for cfg in np2:2:1 np3:3:1 np1-t2:1:2; do
    IFS=: read -r tag np nt <<< "$cfg"
    run "$mode-$tag" "$np" "$nt" "$mode" "$file"
    # the dump header holds the timestep and box; the body every coordinate, velocity, force
    if cmp -s "$W/$mode-np1.dump" "$W/$mode-$tag.dump"; then
      echo "$mode: $tag identical to 1 rank ($STEPS steps, $(($(wc -l < "$W/$mode-np1.dump") - 9)) atoms)"
    else
      echo "$mode: $tag DIFFERS from 1 rank after $STEPS steps:"
      diff "$W/$mode-np1.dump" "$W/$mode-$tag.dump" | head -6
      status=1
    fi
  done
  # a negative control: the run moved (the last state is not the start)
  if [ "$(sed -n 10p "$W/$mode-np1.dump")" = "" ]; then echo "$mode: empty dump"; status=1; fi
done
# negative control of the comparison itself: two modes must differ
if cmp -s "$W/fp32-np1.dump" "$W/int8-np1.dump"; then
  echo "fp32 and int8 trajectories are identical: the comparison cannot tell runs apart"
  status=1
fi
exit $status
