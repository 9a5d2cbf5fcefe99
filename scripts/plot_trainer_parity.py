#!/usr/bin/python3
"""Trainer parity (issue 14): qnn's and DeePMD-kit's validation errors on one plot and one CSV.

Usage: plot_trainer_parity.py QNN_LCURVE.csv PEER_DIR OUT_PREFIX [--label NAME=QNN_LCURVE.csv ...]

  QNN_LCURVE.csv  `qnn train`'s learning curve (val_* columns: all validation frames)
  PEER_DIR        scripts/train_deepmd_peer.sh's output (or its published copy): dp_test.csv
                  (`dp test` on all of data_2 at a few steps) and lcurve.csv (DeePMD-kit's
                  own curve, whose validation is ONE frame per point, drawn faint)
  OUT_PREFIX      writes OUT_PREFIX.png and OUT_PREFIX.csv
  --label         further qnn curves to draw (e.g. an earlier trainer), NAME=CSV
  --quoted CSV    DeePMD-kit dp-test figures quoted from elsewhere (same columns as dp_test.csv),
                  drawn as hollow markers and used for the ratios where PEER_DIR has no point
  --qnn-files CSV `qnn eval` on data_2 of the files `qnn train` wrote at some steps (columns
                  step,e_rmse_meV_atom,f_rmse_meV_A): the files carry the energy bias refit
                  on the training frames (docs/training.md), the curve does not
  PEER_DIR/dp_test_refit.csv, when present (bench/peer/dp_test_refit.sh): DeePMD-kit's energy
                  RMSE with the same refit applied to its models, drawn and tabulated beside

The CSV has one row per step that any curve has: step, then for each curve its energy
(meV/atom) and force (meV/Å) RMSE on data_2 where it has a point, and, at the steps where
dp test ran, the ratios qnn/DeePMD-kit that the issue's targets are stated in.
Needs Debian's python3-matplotlib (run with /usr/bin/python3).
"""
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def die(msg):
    sys.stderr.write(f"plot_trainer_parity: error: {msg}\n")
    sys.exit(2)


def read_rows(path):
    if not os.path.isfile(path):
        die(f"{path}: no such file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        die(f"{path}: no rows")
    return rows


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def qnn_curve(path):
    rows = read_rows(path)
    for k in ("step", "val_e_rmse_meV_atom", "val_f_rmse_meV_A"):
        if k not in rows[0]:
            die(f"{path}: not a qnn learning curve (no column {k})")
    return {int(num(r["step"])): (num(r["val_e_rmse_meV_atom"]), num(r["val_f_rmse_meV_A"])) for r in rows}


def main(argv):
    extra = []
    quoted_path = None
    files_path = None
    args = []
    i = 1
    while i < len(argv):
        if argv[i] == "--quoted":
            if i + 1 >= len(argv):
                die("--quoted needs a CSV")
            quoted_path = argv[i + 1]
            i += 2
        elif argv[i] == "--qnn-files":
            if i + 1 >= len(argv):
                die("--qnn-files needs a CSV")
            files_path = argv[i + 1]
            i += 2
        elif argv[i] == "--label":
            if i + 1 >= len(argv) or "=" not in argv[i + 1]:
                die("--label needs NAME=CSV")
            name, path = argv[i + 1].split("=", 1)
            extra.append((name, path))
            i += 2
        else:
            args.append(argv[i])
            i += 1
    if len(args) != 3:
        sys.stderr.write(__doc__)
        return 2
    qnn_path, peer_dir, out = args
    curves = [("qnn", qnn_curve(qnn_path))] + [(n, qnn_curve(p)) for n, p in extra]
    test = {int(num(r["step"])): (num(r["e_rmse_meV_per_atom"]), num(r["f_rmse_meV_per_A"]))
            for r in read_rows(os.path.join(peer_dir, "dp_test.csv"))}
    quoted = {}
    if quoted_path:
        quoted = {int(num(r["step"])): (num(r["e_rmse_meV_per_atom"]), num(r["f_rmse_meV_per_A"]))
                  for r in read_rows(quoted_path)}
    measured = dict(test)
    test = {**quoted, **test}  # measured points win
    files = {}
    if files_path:
        files = {int(num(r["step"])): (num(r["e_rmse_meV_atom"]), num(r["f_rmse_meV_A"])) for r in read_rows(files_path)}
    refit_path = os.path.join(peer_dir, "dp_test_refit.csv")
    peer_refit = {}
    if os.path.isfile(refit_path):
        peer_refit = {int(num(r["step"])): num(r["val_e_rmse_refit_meV_atom"]) for r in read_rows(refit_path)}
    lc_path = os.path.join(peer_dir, "lcurve.csv")
    lc = {}
    if os.path.isfile(lc_path):
        lc = {int(num(r["step"])): (num(r["rmse_e_val_meV_per_atom"]), num(r["rmse_f_val_meV_per_A"]))
              for r in read_rows(lc_path)}

    steps = sorted(set().union(*[set(c) for _, c in curves], set(test), set(files)))
    header = ["step"]
    for name, _ in curves:
        header += [f"{name}_e_rmse_meV_atom", f"{name}_f_rmse_meV_A"]
    header += ["deepmd_dptest_e_rmse_meV_atom", "deepmd_dptest_f_rmse_meV_A", "deepmd_source", "f_ratio_qnn_over_deepmd",
               "e_ratio_qnn_over_deepmd"]
    if files:
        header += ["qnn_file_e_rmse_meV_atom", "qnn_file_f_rmse_meV_A", "deepmd_refit_e_rmse_meV_atom",
                   "f_ratio_qnn_file_over_deepmd", "e_ratio_qnn_file_over_deepmd", "e_ratio_qnn_file_over_deepmd_refit"]
    with open(out + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for s in steps:
            row = [s]
            for _, c in curves:
                e, fr = c.get(s, (math.nan, math.nan))
                row += [f"{e:.4f}", f"{fr:.4f}"]
            te, tf = test.get(s, (math.nan, math.nan))
            qe, qf = curves[0][1].get(s, (math.nan, math.nan))
            src = "measured" if s in measured else ("quoted" if s in quoted else "")
            row += [f"{te:.4f}", f"{tf:.4f}", src, f"{qf / tf:.3f}" if s in test else "",
                    f"{qe / te:.3f}" if s in test else ""]
            if files:
                fe, ff = files.get(s, (math.nan, math.nan))
                pr = peer_refit.get(s, math.nan)
                row += [f"{fe:.4f}", f"{ff:.4f}", f"{pr:.4f}",
                        f"{ff / tf:.3f}" if s in files and s in test else "",
                        f"{fe / te:.3f}" if s in files and s in test else "",
                        f"{fe / pr:.3f}" if s in files and s in peer_refit else ""]
            w.writerow(["" if x == "nan" else x for x in row])

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, k, title in ((axes[0], 1, "force RMSE on data_2 (meV/Å)"), (axes[1], 0, "energy RMSE on data_2 (meV/atom)")):
        if lc:
            xs = sorted(s for s in lc if s > 0)
            ax.plot(xs, [lc[s][k] for s in xs], color="tab:gray", alpha=0.35, lw=0.8,
                    label="DeePMD-kit lcurve (1 frame per point)")
        xs = sorted(measured)
        ax.plot(xs, [measured[s][k] for s in xs], "o", color="black", ms=7, label="DeePMD-kit, dp test (80 frames)")
        if quoted:
            xs = sorted(quoted)
            ax.plot(xs, [quoted[s][k] for s in xs], "o", mfc="none", color="black", ms=9,
                    label="DeePMD-kit, dp test, quoted (issue 14)")
        if peer_refit and k == 0:
            xs = sorted(peer_refit)
            ax.plot(xs, [peer_refit[s] for s in xs], "x", color="black", ms=8, mew=1.6,
                    label="DeePMD-kit, dp test, energy bias refit on train")
        if files:
            xs = sorted(files)
            ax.plot(xs, [files[s][k] for s in xs], "s", color="tab:blue", ms=7,
                    label="qnn, file written at that step (energy bias refit on train)")
        for (name, c), color in zip(curves, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
            xs = sorted(s for s in c if s > 0)
            note = ", no refit" if files else ""
            ax.plot(xs, [c[s][k] for s in xs], "-", color=color, lw=1.4, label=f"{name} learning curve (80 frames{note})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    if files or peer_refit:
        axes[1].legend(fontsize=7)
    fig.suptitle("Trainer parity: same data, network and schedule (issue 14)")
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    print(f"wrote {out}.png and {out}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
