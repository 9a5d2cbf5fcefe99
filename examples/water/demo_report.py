#!/usr/bin/python3
"""The demo's summary (examples/water/run_demo.sh): one table and one PNG from the LAMMPS runs
of examples/water/in.demo, one run per potential.

usage: demo_report.py OUT_DIR LABEL=FILE:MODE ... [--ranks=N]

Reads OUT_DIR/log.LABEL (the DEMO_DEVIATION / DEMO_DRIFT lines and the NVE run's
"Performance:" line) and OUT_DIR/energy.LABEL.dat (time, total energy per atom every 2 NVE
steps), prints the table and writes OUT_DIR/energy.png (total energy per atom against time,
each run relative to its own mean; a second panel shows the conserving modes alone). The
first LABEL is the FP32 reference (speed ratios are to it). Needs matplotlib (Debian's
python3-matplotlib; scripts/bootstrap.sh installs it).
"""
import math
import os
import re
import sys


def fail(msg):
    sys.exit(f"demo_report.py: error: {msg}")


def read_log(path):
    """DEMO_* key/value lines and the last Performance line (the NVE run's) of a LAMMPS log."""
    if not os.path.isfile(path):
        fail(f"no LAMMPS log {path}")
    out = {}
    perf = None
    loop = None
    with open(path) as f:
        for line in f:
            if line.startswith("DEMO_"):
                w = line.split()
                out[w[0]] = {w[i]: float(w[i + 1]) for i in range(2, len(w) - 1, 2)}
            elif line.startswith("Performance:"):
                m = re.search(r"([0-9.eE+-]+) katom-step/s", line)
                if m:
                    perf = float(m.group(1)) * 1000.0
            elif line.startswith("Loop time of"):
                loop = line.strip()
    for key in ("DEMO_DEVIATION", "DEMO_DRIFT"):
        if key not in out:
            fail(f"{path} has no {key} line: the run did not finish (see the log)")
    if perf is None:
        fail(f"{path} has no 'Performance:' line with katom-step/s")
    return out, perf, loop


def read_energy(path):
    """(time ps, E eV/atom) columns written by fix ave/time."""
    t, e = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            w = line.split()
            t.append(float(w[1]))
            e.append(float(w[2]))
    if len(t) < 3:
        fail(f"{path}: fewer than 3 energy samples")
    return t, e


def fit_slope(t, e):
    """Least-squares slope of e(t) and its standard error."""
    n = len(t)
    tm = sum(t) / n
    em = sum(e) / n
    sxx = sum((x - tm) ** 2 for x in t)
    b = sum((x - tm) * (y - em) for x, y in zip(t, e)) / sxx
    a = em - b * tm
    res = sum((y - a - b * x) ** 2 for x, y in zip(t, e))
    se = math.sqrt(res / (n - 2) / sxx) if n > 2 else float("nan")
    return b, se


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    ranks = 1
    for a in argv[1:]:
        if a.startswith("--ranks="):
            ranks = int(a.split("=", 1)[1])
    if len(args) < 2:
        fail(__doc__)
    out_dir = args[0]
    runs = []
    for spec in args[1:]:
        label, rest = spec.split("=", 1)
        model, mode = rest.rsplit(":", 1)
        demo, speed, loop = read_log(os.path.join(out_dir, f"log.{label}"))
        t, e = read_energy(os.path.join(out_dir, f"energy.{label}.dat"))
        slope, se = fit_slope(t, [x * 1000.0 for x in e])  # meV/atom/ps
        runs.append(dict(label=label, model=os.path.basename(model), mode=mode, dev=demo["DEMO_DEVIATION"],
                         drift=demo["DEMO_DRIFT"], speed=speed, loop=loop, t=t, e=e, fit=(slope, se)))

    ref = runs[0]
    print()
    print("  potential (mode)                  F dev. from FP32   E dev.      NVE drift         E RMS       speed")
    print("                                    RMSE (meV/A)       (meV/atom)  (meV/atom/ps)     (meV/atom)  (atom-steps/s)")
    for r in runs:
        name = f"{r['model']} ({r['mode']})"
        if r is ref:
            dev_f, dev_e = "reference", "-"
        else:
            dev_f = f"{r['dev']['dF_rmse_meV_per_A']:.2f}"
            dev_e = f"{r['dev']['dE_meV_per_atom']:+.3f}"
        slope = r["drift"]["slope_meV_per_atom_per_ps"]
        rms = r["drift"]["rms_meV_per_atom"]
        ratio = r["speed"] / ref["speed"]
        print(f"  {name:<34}{dev_f:<19}{dev_e:<12}{slope:<+18.4f}{rms:<12.3f}"
              f"{r['speed']:,.0f} ({ratio:.2f}x)")
        own = r["fit"][0]
        if abs(own - slope) > 0.01 * abs(slope) + 0.001:
            print(f"  (warning: a least-squares fit of energy.{r['label']}.dat gives {own:+.4f} meV/atom/ps)")
    nve_ps = ref["drift"]["ps"]
    print()
    print(f"  F/E dev.: compute qnn/deviation against the FP32 file every 20 steps of the NVT run (force")
    print(f"  RMSE per component, mean per-atom energy difference). NVE drift: fix qnn/drift's least-squares")
    print(f"  slope of the total energy over {nve_ps:g} ps (sampled every 2 steps), E RMS its fluctuation.")
    print(f"  Speed: the NVE run's own LAMMPS 'Performance' line, {ranks} MPI rank{'s' if ranks != 1 else ''}, 192 atoms (more")
    print(f"  atoms per rank run faster per atom: bench/RESULTS.md has 1,536 and 12,288 atoms).")
    print("  Normal: weight-only and w8a16 deviate from FP32 by about 3.8 meV/A in force (their shared int8")
    print("  weights) and int8 by about 14 meV/A (held-out DFT frames, potentials/README.md), all small next")
    print("  to FP32's own 58.8 meV/A error against DFT. fp32, weight-only and w8a16 conserve energy: E RMS")
    print("  about 0.02-0.03 meV/atom, and a slope over a run this short that is noise (a few 0.01")
    print("  meV/atom/ps; 10-ps runs give |drift| < 0.002); int8 does not (E RMS about 2 meV/atom, drift")
    print("  about +1.9 meV/atom/ps over 10 ps; bench/RESULTS.md).")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is not installed (apt-get install python3-matplotlib; scripts/bootstrap.sh does it)")
    # Top: every run; bottom: the conserving modes alone (int8's fluctuations hide them above).
    # Each curve is its run's total energy per atom minus that run's mean.
    conserving = [r for r in runs if r["mode"] != "int8"]  # fp32, weight-only, w8a16
    fig, axes = plt.subplots(2 if conserving and len(conserving) < len(runs) else 1, 1, sharex=True,
                             figsize=(8, 6.5), squeeze=False)
    colours = {}
    for i, panel in enumerate([runs, conserving][:axes.shape[0]]):
        ax = axes[i][0]
        for r in panel:
            mean = sum(r["e"]) / len(r["e"])
            t0 = r["t"][0]
            line, = ax.plot([x - t0 for x in r["t"]], [(y - mean) * 1000.0 for y in r["e"]], lw=0.7,
                            color=colours.get(r["label"]),
                            label=f"{r['model']} ({r['mode']}): mean {mean:.4f} eV/atom, "
                                  f"drift {r['drift']['slope_meV_per_atom_per_ps']:+.4f} meV/atom/ps")
            colours[r["label"]] = line.get_color()
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_ylabel("E_total/atom − mean (meV/atom)")
        ax.legend(fontsize=7.5, loc="upper left", framealpha=0.9)
    axes[0][0].set_title("qnn water demo: total energy in NVE (192 atoms, 0.5 fs, after NVT at 300 K)", fontsize=10)
    if axes.shape[0] == 2:
        axes[1][0].set_title("the conserving modes on their own scale", fontsize=9)
    axes[-1][0].set_xlabel("NVE time (ps)")
    fig.tight_layout()
    png = os.path.join(out_dir, "energy.png")
    fig.savefig(png, dpi=120)
    print()
    print(f"  plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
