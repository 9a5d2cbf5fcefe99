#!/usr/bin/python3
"""Checks a report directory written by report.py: every file there, every number finite and
physically in range, the drift fix agreeing with the script's own fit. No speed assertions
(the machines are shared and noisy). Usage: check_report.py REPORT_DIR. Exit 0 = pass."""
import csv
import math
import os
import sys

failures = []


def check(ok, msg):
    if not ok:
        failures.append(msg)
    return ok


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def num(row, key, where):
    try:
        v = float(row[key])
    except (KeyError, ValueError):
        failures.append(f"{where}: column {key} missing or not a number ({row.get(key)!r})")
        return float("nan")
    check(math.isfinite(v), f"{where}: {key} = {v} is not finite")
    return v


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = sys.argv[1]
    for name in ("report.md", "nve.csv", "fidelity.csv", "rdf.csv", "throughput.csv", "peers.csv", "energy.png",
                 "rdf-192.png", "throughput.png", "scan.csv", "scan.png"):
        p = os.path.join(d, name)
        if check(os.path.isfile(p) and os.path.getsize(p) > 0, f"{name} missing or empty") and name.endswith(".png"):
            with open(p, "rb") as f:
                check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG")
    if failures:
        return report()
    md = open(os.path.join(d, "report.md")).read()
    for s in ("## Targets", "## Energy conservation", "## Fidelity", "## Throughput", "CPU **", "## Potentials"):
        check(s in md, f"report.md lacks '{s}'")
    check("## Failures" not in md, "report.md lists failed runs")

    nve = rows(os.path.join(d, "nve.csv"))
    modes = {r["mode"] for r in nve}
    check("fp32" in modes, "nve.csv has no fp32 run")
    for r in nve:
        w = f"nve.csv {r['atoms']} {r['mode']}"
        for k in ("T_mean_K", "T_min_K", "T_max_K"):
            t = num(r, k, w)
            check(100.0 <= t <= 600.0, f"{w}: {k} = {t} K outside 100-600 K")
        fix, fit, se = num(r, "drift_fix_meV_atom_ps", w), num(r, "drift_fit_meV_atom_ps", w), num(r, "drift_fit_stderr", w)
        bound = 5.0 if r["mode"] in ("fp32", "weight-only", "fp64") else 100.0
        check(abs(fix) < bound, f"{w}: |drift| = {abs(fix)} meV/atom/ps >= {bound}")
        # fix qnn/drift and the independent fit see the same samples: they must agree closely
        check(abs(fix - fit) <= 0.02 * abs(fit) + 0.1 * se + 1e-3,
              f"{w}: fix qnn/drift slope {fix} disagrees with the own fit {fit} (+-{se})")
        rf, rm = num(r, "etot_rms_fix_meV_atom", w), num(r, "etot_rms_fit_meV_atom", w)
        check(abs(rf - rm) <= 0.02 * rm + 1e-4, f"{w}: E rms fix {rf} vs fit {rm}")
        check(0.0 < num(r, "ke_std_meV_atom", w) < 100.0, f"{w}: std KE out of range")
        num(r, "drift_over_kestd_fix", w)
    fid = rows(os.path.join(d, "fidelity.csv"))
    check({r["mode"] for r in fid} == modes, "fidelity.csv and nve.csv list different modes")
    for r in fid:
        w = f"fidelity.csv {r['atoms']} {r['mode']}"
        pr = num(r, "OO_peak_r_A", w)
        check(2.6 <= pr <= 3.0, f"{w}: O-O first peak at {pr} A, outside 2.6-3.0 A")
        pg = num(r, "OO_peak_g", w)
        check(1.5 <= pg <= 8.0, f"{w}: O-O first peak height {pg} outside 1.5-8")
        for k in ("OO_peak_diff_pct", "gOO_maxdiff", "gOH_maxdiff", "gHH_maxdiff", "dE_mean_meV_atom", "F_RMSE_mean_meV_A"):
            num(r, k, w)
        if r["mode"] == "fp32":
            check(float(r["gOO_maxdiff"]) == 0.0 and float(r["OO_peak_diff_pct"]) == 0.0, f"{w}: fp32 differs from itself")
        else:
            check(int(r["n_evals"]) >= 2, f"{w}: fewer than 2 deviation evaluations")
            fr = float(r["F_RMSE_mean_meV_A"])
            check(0.0 < fr < 1000.0, f"{w}: force RMSE vs FP32 {fr} meV/A out of (0, 1000)")
            check(abs(float(r["dE_mean_meV_atom"])) < 100.0, f"{w}: |dE| >= 100 meV/atom")
            check(float(r["F_RMSE_max_meV_A"]) >= fr, f"{w}: max force RMSE below its mean")
    rdf = rows(os.path.join(d, "rdf.csv"))
    check(len(rdf) >= 100 * len(modes), "rdf.csv too short")
    for r in rdf:
        for k in ("r_A", "g_OO", "g_OH", "g_HH"):
            v = num(r, k, "rdf.csv")
            check(v >= 0.0, f"rdf.csv: negative {k}")
        if len(failures) > 20:
            break
    th = rows(os.path.join(d, "throughput.csv"))
    check(len(th) > 0, "throughput.csv is empty")
    for r in th:
        w = f"throughput.csv {r['atoms']} np{r['ranks']} {r['mode']}"
        check(num(r, "atom_steps_per_s", w) > 0 and num(r, "ns_per_day", w) > 0, f"{w}: non-positive speed")
        if r["mode"] == "fp32":
            check(abs(float(r["ratio_to_fp32"]) - 1.0) < 1e-9, f"{w}: fp32 ratio is not 1")
        else:
            check(float(r["ratio_to_fp32"]) > 0, f"{w}: ratio not positive")
    # close-approach scan: every mode and orientation, finite; fp32 and weight-only evaluate
    # forces as the exact gradient of their energy, so along the liquid-accessible part of the
    # path (O-O >= 2.4 A) the work of the forces must match the energy change to the trapezoid
    # rule's error (0.04 A steps: ~1e-3 eV measured); a wrong force sign or scale breaks it
    scan = rows(os.path.join(d, "scan.csv"))
    check({r["mode"] for r in scan} == modes, "scan.csv and nve.csv list different modes")
    check(len({r["orientation"] for r in scan}) == 2, "scan.csv lacks an orientation")
    paths = {}
    for r in scan:
        w = f"scan.csv {r['orientation']} {r['mode']}"
        paths.setdefault((r["orientation"], r["mode"]), []).append(
            [num(r, k, w) for k in ("x_OO_A", "E_minus_E0_eV", "Fx_mol2_eV_per_A", "unaccounted_eV")])
    for (orient, mode), p in paths.items():
        w = f"scan.csv {orient} {mode}"
        check(len(p) >= 10 and all(p[i + 1][0] < p[i][0] for i in range(len(p) - 1)), f"{w}: x not a decreasing path")
        work = 0.0   # recomputed here: the work of the force on molecule 2 from the first point
        for i in range(1, len(p)):
            work += 0.5 * (p[i][2] + p[i - 1][2]) * (p[i - 1][0] - p[i][0])
            x, e, un = p[i][0], p[i][1], p[i][3]
            check(abs(un - (e - work)) < 1e-6 + 1e-6 * abs(e), f"{w} x={x}: unaccounted column {un} != E - work {e - work}")
            if mode in ("fp32", "weight-only", "fp64") and x >= 2.4:
                check(abs(e - work) < 0.01, f"{w} x={x}: forces do not integrate to the energy (E - work = {e - work} eV)")
    for r in rows(os.path.join(d, "peers.csv")):
        check(num(r, "atom_steps_per_s", "peers.csv") > 0, f"peers.csv {r['name']}: non-positive speed")
    return report()


def report():
    if failures:
        print("check_report: FAILED")
        for f in failures:
            print("  " + f)
        return 1
    print("check_report: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
