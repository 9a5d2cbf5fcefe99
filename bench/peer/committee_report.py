#!/usr/bin/env python3
"""Helpers of bench/peer/committee.sh (issue 26). Needs numpy (the peer venv's python).

  committee_report.py dump2npy DUMP DIR   a LAMMPS dump (id type x y z, orthogonal box, sorted
                                          by id; types 1 = O, 2 = H) as a DeePMD npy system
  committee_report.py report OUT REPEATS  the speed table (median atom-steps/s of the timed
                                          run of each log) and the int8-vs-fp32 classification
                                          of frames by the committees' max_devi_f, as Markdown
"""
import glob
import os
import re
import statistics
import sys

import numpy as np

TRUST_LO, TRUST_HI = 0.05, 0.15  # eV/A, DP-GEN's usual model_devi_f_trust_lo / _hi


def dump2npy(dump, out):
    frames, boxes, types = [], [], None
    lines = open(dump).read().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("ITEM: NUMBER OF ATOMS"):
            n = int(lines[i + 1])
            b = [list(map(float, lines[i + 3 + d].split()[:2])) for d in range(3)]
            assert lines[i + 6].startswith("ITEM: ATOMS id type x y z"), lines[i + 6]
            rows = np.array([list(map(float, l.split())) for l in lines[i + 7:i + 7 + n]])
            assert (rows[:, 0] == np.arange(1, n + 1)).all(), "dump not sorted by id"
            t = rows[:, 1].astype(int) - 1
            types = t if types is None else types
            assert (types == t).all()
            frames.append(rows[:, 2:5].ravel())
            boxes.append(np.diag([hi - lo for lo, hi in b]).ravel())
            i += 7 + n
        else:
            i += 1
    os.makedirs(f"{out}/set.000", exist_ok=True)
    np.savetxt(f"{out}/type.raw", types, fmt="%d")
    open(f"{out}/type_map.raw", "w").write("O\nH\n")
    np.save(f"{out}/set.000/coord.npy", np.array(frames))
    np.save(f"{out}/set.000/box.npy", np.array(boxes))
    # qnn's reader wants energies and forces too; zeros (not used by model-devi)
    np.save(f"{out}/set.000/energy.npy", np.zeros(len(frames)))
    np.save(f"{out}/set.000/force.npy", np.zeros((len(frames), 3 * len(types))))
    print(f"{out}: {len(frames)} frames of {len(types)} atoms")


def loop_rate(path):
    text = open(path).read()
    loops = re.findall(r"^Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms", text, re.M)
    t, steps, atoms = loops[-1]
    return int(atoms) * int(steps) / float(t)


def max_devi_f(path):
    rows = [l.split() for l in open(path) if l.strip() and not l.startswith("#")]
    return np.array([float(r[4]) for r in rows])


def klass(x):
    return np.where(x < TRUST_LO, 0, np.where(x < TRUST_HI, 1, 2))


def report(out, repeats):
    labels = ["deepmd-1", "deepmd-4", "qnn-fp32-1", "qnn-fp32-4", "qnn-int8-1", "qnn-int8-4"]
    rate = {l: statistics.median(loop_rate(p) for p in sorted(glob.glob(f"{out}/log.{l}.*"))) for l in labels}
    print("| pair style (1,536 atoms, 1 rank, 1 thread) | 1 model: atom-steps/s | 4 models, out_freq 10: atom-steps/s "
          "| 4-model cost / 1-model cost | 4 models: × DeePMD-kit's |")
    print("|---|---|---|---|---|")
    names = {"deepmd": "`pair_style deepmd`, compressed (DeePMD-kit)", "qnn-fp32": "`pair_style qnn` fp32",
             "qnn-int8": "`pair_style qnn` int8 (quantized members)"}
    for key, name in names.items():
        one, four = rate[f"{key}-1"], rate[f"{key}-4"]
        print(f"| {name} | {one:,.0f} | {four:,.0f} | {one / four:.2f} | {four / rate['deepmd-4']:.2f} |")
    print(f"\nmedian of {repeats} round-robin repeats; each: `run 10`, then `run 200` timed (LAMMPS Loop time).\n")
    for what, title in [("data", "DFT frames data_0, data_1, data_2 (320 frames, 192 atoms)"),
                        ("explore", "600 K NVT exploration of the fp32 committee (200 frames, 1,536 atoms)")]:
        f32, i8 = max_devi_f(f"{out}/devi.{what}.fp32.out"), max_devi_f(f"{out}/devi.{what}.int8.out")
        assert len(f32) == len(i8)
        c32, c8 = klass(f32), klass(i8)
        d = i8 - f32
        changed = int((c32 != c8).sum())
        counts = lambda c: "/".join(str(int((c == k).sum())) for k in range(3))
        print(f"**{title}**: max_devi_f fp32 {f32.min():.4f}–{f32.max():.4f} eV/A (median {np.median(f32):.4f}); "
              f"int8 − fp32: mean {d.mean() * 1e3:+.2f} meV/A, RMS {np.sqrt((d ** 2).mean()) * 1e3:.2f} meV/A, "
              f"max |Δ| {np.abs(d).max() * 1e3:.2f} meV/A, RMS relative {np.sqrt(((d / f32) ** 2).mean()) * 100:.2f}%; "
              f"frames below/between/above {TRUST_LO}/{TRUST_HI} eV/A: "
              f"fp32 {counts(c32)}, int8 {counts(c8)}; classification changed: {changed} of {len(f32)} "
              f"({100.0 * changed / len(f32):.1f}%).")
        # The levels above may leave every frame in one class (a committee far from converged):
        # levels placed inside this committee's own range test the same question where frames are.
        lo, hi = np.quantile(f32, [1 / 3, 2 / 3])
        k32 = np.where(f32 < lo, 0, np.where(f32 < hi, 1, 2))
        k8 = np.where(i8 < lo, 0, np.where(i8 < hi, 1, 2))
        ch = int((k32 != k8).sum())
        print(f"  With levels at the fp32 committee's own 1/3 and 2/3 quantiles ({lo:.4f} / {hi:.4f} eV/A): "
              f"int8 {counts(k8)}, classification changed: {ch} of {len(f32)} ({100.0 * ch / len(f32):.1f}%).\n")


if __name__ == "__main__":
    if sys.argv[1] == "dump2npy":
        dump2npy(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "report":
        report(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
