#!/usr/bin/python3
"""DeePMD-kit's validation energy RMSE with and without the energy-bias refit that `qnn train`
applies to the model it writes (docs/training.md, "Energy bias refit"), so that the two
trainers are compared both ways (issue 14).

Usage: dp_refit_rmse.py --train SYS=E_PERATOM [SYS=E_PERATOM ...] --val SYS=E_PERATOM [...]

  SYS         a DeePMD system directory (its type.raw gives the frames' composition)
  E_PERATOM   the `<detail>.e_peratom.out` that `dp test -d <detail>` wrote for SYS:
              columns data_e pred_e, per atom (eV/atom)

The refit is the minimum-norm least-squares per-species shift d of counts . d ~ (E_pred - E_ref)
over the training frames, subtracted from every prediction. Prints one CSV line:
  val_e_rmse_meV_atom,val_e_rmse_refit_meV_atom,train_mean_error_meV_atom,train_frames,val_frames
Needs numpy (Debian's python3-numpy).
"""
import os
import sys

import numpy as np


def die(msg):
    sys.stderr.write(f"dp_refit_rmse: error: {msg}\n")
    sys.exit(2)


def load(spec):
    """(counts (F, S_max), residual per frame in eV, natoms) of one SYS=FILE pair."""
    if "=" not in spec:
        die(f"'{spec}' is not SYS=E_PERATOM")
    sysdir, path = spec.split("=", 1)
    tfile = os.path.join(sysdir, "type.raw")
    if not os.path.isfile(tfile):
        die(f"{tfile}: no such file")
    if not os.path.isfile(path):
        die(f"{path}: no such file")
    types = np.loadtxt(tfile, dtype=int, ndmin=1)
    if types.size == 0 or types.min() < 0:
        die(f"{tfile}: empty or negative type")
    d = np.loadtxt(path, ndmin=2)
    if d.shape[1] < 2 or d.shape[0] == 0 or not np.all(np.isfinite(d[:, :2])):
        die(f"{path}: expected rows 'data_e pred_e' with finite values")
    n = types.size
    counts = np.bincount(types)
    resid = (d[:, 1] - d[:, 0]) * n  # per frame, eV
    return np.tile(counts, (d.shape[0], 1)), resid, np.full(d.shape[0], n)


def stack(specs):
    parts = [load(s) for s in specs]
    smax = max(p[0].shape[1] for p in parts)
    counts = np.vstack([np.pad(p[0], ((0, 0), (0, smax - p[0].shape[1]))) for p in parts])
    return counts, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def main(argv):
    train, val, cur = [], [], None
    for a in argv[1:]:
        if a in ("--train", "--val"):
            cur = train if a == "--train" else val
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif cur is None:
            die(f"'{a}' before --train or --val")
        else:
            cur.append(a)
    if not train or not val:
        die("need --train and --val (see --help)")
    ct, rt, nt = stack(train)
    cv, rv, nv = stack(val)
    s = max(ct.shape[1], cv.shape[1])
    ct = np.pad(ct, ((0, 0), (0, s - ct.shape[1])))
    cv = np.pad(cv, ((0, 0), (0, s - cv.shape[1])))
    delta = np.linalg.pinv(ct.astype(float)) @ rt  # minimum-norm least squares
    raw = 1e3 * np.sqrt(np.mean((rv / nv) ** 2))
    fit = 1e3 * np.sqrt(np.mean(((rv - cv @ delta) / nv) ** 2))
    print(f"{raw:.4f},{fit:.4f},{1e3 * np.mean(rt / nt):.4f},{rt.size},{rv.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
