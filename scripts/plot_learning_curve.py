#!/usr/bin/python3
"""Plot the learning curve CSV written by `qnn train` (energy and force RMSE vs step).

Usage: plot_learning_curve.py lcurve.csv lcurve.png
Needs Debian's python3-matplotlib (run with /usr/bin/python3).
"""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(path):
    """Columns of the CSV as lists of floats (NaN for 'nan' or empty cells)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    def col(name):
        out = []
        for r in rows:
            v = r.get(name, "")
            out.append(float(v) if v not in ("", None) else math.nan)
        return out
    return {name: col(name) for name in (rows[0].keys() if rows else [])}


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    c = read_curve(argv[1])
    if not c or not c["step"]:
        sys.stderr.write(f"{argv[1]}: empty learning curve\n")
        return 1
    steps = [max(s, 1) for s in c["step"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [
        ("energy RMSE (meV/atom)", "train_e_rmse_meV_atom", "val_e_rmse_meV_atom"),
        ("force RMSE (meV/Å)", "train_f_rmse_meV_A", "val_f_rmse_meV_A"),
    ]
    for ax, (title, trn, val) in zip(axes[:2], panels):
        ax.plot(steps, c[trn], label="train", lw=1.2)
        if any(not math.isnan(v) for v in c[val]):
            ax.plot(steps, c[val], label="validation", lw=1.2)
        refit = c.get("val_e_rmse_refit_meV_atom") if val == "val_e_rmse_meV_atom" else None
        if refit and any(not math.isnan(v) for v in refit):
            ax.plot(steps, refit, label="validation, energy bias refit on train", lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax = axes[2]
    ax.plot(steps, c["loss"], label="loss", lw=1.2)
    ax.plot(steps, c["lr"], label="learning rate", lw=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("loss and learning rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
