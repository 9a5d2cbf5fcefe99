#!/usr/bin/python3
"""Analysis of water_stability.sh's NVE run (issue 14, part 2): OUTDIR/log.lammps and
OUTDIR/oxygen.dump. Prints the smallest O-O distance of each dump frame's minimum (minimum
image, orthogonal or triclinic box), T (mean, min, max) of the NVE thermo lines, the drift
of fix qnn/drift, the criteria and a verdict; writes OUTDIR/stability.json. Exit status 0
when every criterion is met, 1 when one is not, 2 on unreadable input.
"""
import json
import re
import sys

import numpy as np


def die(msg):
    sys.stderr.write(f"stability_analysis: error: {msg}\n")
    sys.exit(2)


def read_dump(path):
    """Frames of a LAMMPS custom dump (id x y z): (step, box matrix rows a b c, positions)."""
    frames = []
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("ITEM: TIMESTEP"):
            i += 1
            continue
        step = int(lines[i + 1])
        n = int(lines[i + 3])
        head = lines[i + 4]
        b = [list(map(float, lines[i + 5 + k].split())) for k in range(3)]
        if "xy" in head:  # triclinic: bounds with tilts
            xy, xz, yz = b[0][2], b[1][2], b[2][2]
            xlo = b[0][0] - min(0.0, xy, xz, xy + xz)
            xhi = b[0][1] - max(0.0, xy, xz, xy + xz)
            ylo = b[1][0] - min(0.0, yz)
            yhi = b[1][1] - max(0.0, yz)
            lx, ly, lz = xhi - xlo, yhi - ylo, b[2][1] - b[2][0]
        else:
            xy = xz = yz = 0.0
            lx, ly, lz = b[0][1] - b[0][0], b[1][1] - b[1][0], b[2][1] - b[2][0]
        cell = np.array([[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]])
        pos = np.array([list(map(float, lines[i + 9 + k].split()[1:4])) for k in range(n)])
        frames.append((step, cell, pos))
        i += 9 + n
    return frames


def min_distance(cell, pos):
    inv = np.linalg.inv(cell)
    frac = pos @ inv
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    r = np.linalg.norm(d @ cell, axis=2)
    np.fill_diagonal(r, np.inf)
    return float(r.min())


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    out = argv[1]
    try:
        log = open(f"{out}/log.lammps").read()
    except OSError as e:
        die(f"{out}/log.lammps: {e}")
    m = re.search(r"^QNNSTABILITY drift (\S+)", log, re.M)
    if not m:
        die(f"{out}/log.lammps: the run did not finish (no QNNSTABILITY line)")
    drift = float(m.group(1))
    # thermo of the NVE run: the last thermo block (after reset_timestep), columns of its header
    blocks = re.findall(r"^\s*Step\s+Time\s+Temp.*?\n(.*?)^Loop time", log, re.M | re.S)
    if not blocks:
        die(f"{out}/log.lammps: no NVE thermo block")
    rows = [list(map(float, l.split())) for l in blocks[-1].strip().splitlines() if re.match(r"^\s*\d", l)]
    temp = np.array([r[2] for r in rows])
    frames = read_dump(f"{out}/oxygen.dump")
    if not frames:
        die(f"{out}/oxygen.dump: no frames")
    dmin = [(step, min_distance(cell, pos)) for step, cell, pos in frames]
    step_min, oo_min = min(dmin, key=lambda t: t[1])
    t_mean = float(temp.mean())
    res = {
        "nve_ps": rows[-1][1],
        "frames": len(frames),
        "oo_min_A": oo_min,
        "oo_min_step": step_min,
        "T_mean_K": t_mean,
        "T_min_K": float(temp.min()),
        "T_max_K": float(temp.max()),
        "drift_meV_atom_ps": drift,
    }
    crit = {
        "O-O >= 2.1 A": oo_min >= 2.1,
        "T within +-30 K of its mean": float(np.abs(temp - t_mean).max()) <= 30.0,
        "|drift| <= 0.01 meV/atom/ps": abs(drift) <= 0.01,
    }
    res["criteria"] = crit
    json.dump(res, open(f"{out}/stability.json", "w"), indent=1)
    print(f"NVE {res['nve_ps']:.2f} ps, {len(frames)} O frames: min O-O {oo_min:.3f} A (step {step_min}); "
          f"T mean {t_mean:.1f} K, range {temp.min():.1f}..{temp.max():.1f} K; drift {drift:+.5f} meV/atom/ps")
    for k, v in crit.items():
        print(f"  {k}: {'met' if v else 'NOT met'}")
    return 0 if all(crit.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
