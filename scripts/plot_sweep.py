#!/usr/bin/env python3
"""Plot the CSV written by `qnn sweep` (RMSE vs bit width).

usage: python3 scripts/plot_sweep.py sweep.csv sweep.png [--title TITLE]

Two panels (forces, energies), log y axis. Colour = what is quantized (weights only,
activations only, both); solid = error vs DFT, dashed = deviation from the FP32 model. The
black line is the FP32 model's own error vs DFT; the grey dotted line is the FP32 model run
in the single-precision float engine vs the double-precision reference (the float noise
floor of the "vs FP32" curves).
"""
import argparse
import csv
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--title", default="qnn bit-width sweep")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_sweep.py: matplotlib is not installed (apt-get install python3-matplotlib)")

    try:
        with open(a.csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"plot_sweep.py: cannot read {a.csv}: {e}")
    need = {"variant", "bits", "force_rmse_dft_meV_A", "force_rmse_fp32_meV_A",
            "energy_rmse_dft_meV_atom", "energy_rmse_fp32_meV_atom"}
    if not rows or not need <= set(rows[0]):
        sys.exit(f"plot_sweep.py: {a.csv} is not a `qnn sweep` CSV (needs columns {sorted(need)})")
    fp32 = [r for r in rows if r["variant"] == "fp32"]

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.25, wspace=0.22)
    panels = [("force", "force RMSE (meV/Å)"), ("energy", "energy RMSE (meV/atom)")]
    colours = {"weights": "tab:blue", "activations": "tab:orange", "both": "tab:red"}
    labels = {"weights": "weights only", "activations": "activations only (16-bit weights)",
              "both": "weights + activations"}
    unit = {"force": "meV_A", "energy": "meV_atom"}
    for ax, (what, ylabel) in zip(axes, panels):
        for v, c in colours.items():
            rs = sorted((r for r in rows if r["variant"] == v), key=lambda r: int(r["bits"]))
            if not rs:
                continue
            x = [int(r["bits"]) for r in rs]
            ax.plot(x, [float(r[f"{what}_rmse_dft_{unit[what]}"]) for r in rs], "-o", color=c, ms=4,
                    label=f"{labels[v]}: vs DFT")
            ax.plot(x, [max(float(r[f"{what}_rmse_fp32_{unit[what]}"]), 1e-12) for r in rs], "--s", color=c,
                    ms=3, alpha=0.8, label=f"{labels[v]}: vs FP32")
        if fp32:
            ax.axhline(float(fp32[0][f"{what}_rmse_dft_{unit[what]}"]), color="black", lw=1.5,
                       label="FP32 model vs DFT")
            floor = float(fp32[0][f"{what}_rmse_fp32_{unit[what]}"])
            if floor > 0:
                ax.axhline(floor, color="grey", lw=1, ls=":", label="FP32 float engine vs double")
        ax.set_yscale("log")
        ax.set_xlabel("bits")
        ax.set_ylabel(ylabel)
        ax.set_xticks(range(2, 17))
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(what)
    handles, lbls = axes[0].get_legend_handles_labels()
    fig.legend(handles, lbls, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(a.title)
    fig.savefig(a.png, dpi=120)


if __name__ == "__main__":
    main()
