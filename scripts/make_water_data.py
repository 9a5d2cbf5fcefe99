#!/usr/bin/env python3
"""Writes LAMMPS data files (atom_style atomic, types 1=O 2=H) from a DeePMD npy water frame,
optionally replicated n×n×n. Usage: make_water_data.py SYSTEM_DIR FRAME REPLICATE OUT.data"""
import sys

import numpy as np


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sysdir, frame, rep, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    box = np.load(f"{sysdir}/set.000/box.npy").astype(np.float64)[frame].reshape(3, 3)
    coord = np.load(f"{sysdir}/set.000/coord.npy").astype(np.float64)[frame].reshape(-1, 3)
    types = np.loadtxt(f"{sysdir}/type.raw", dtype=int).reshape(-1)
    if np.any(box - np.diag(np.diag(box))):
        sys.exit("only orthorhombic frames are supported by this script")
    if coord.shape[0] != types.shape[0]:
        sys.exit(f"coord has {coord.shape[0]} atoms, type.raw {types.shape[0]}")
    L = np.diag(box)
    frac = np.mod(coord / L, 1.0)
    pos, typ = [], []
    for a in range(rep):
        for b in range(rep):
            for c in range(rep):
                pos.append((frac + [a, b, c]) * L)
                typ.append(types)
    pos, typ = np.concatenate(pos), np.concatenate(typ)
    with open(out, "w") as f:
        f.write(f"water from {sysdir} frame {frame}, replicated {rep}x{rep}x{rep} (DeePMD-kit example data, LGPL-3.0)\n\n")
        f.write(f"{len(typ)} atoms\n2 atom types\n\n")
        for k, n in enumerate("xyz"):
            f.write(f"0.0 {L[k] * rep:.10f} {n}lo {n}hi\n")
        f.write("\nMasses\n\n1 15.9994\n2 1.008\n\nAtoms # atomic\n\n")
        for i, (t, p) in enumerate(zip(typ, pos)):
            f.write(f"{i + 1} {t + 1} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}\n")


if __name__ == "__main__":
    main()
