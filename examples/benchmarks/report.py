#!/usr/bin/python3
"""Energy-conservation / fidelity / throughput report for pair_style qnn (issue #8).

Drives LAMMPS (one process at a time) and writes a report directory: report.md, PNG plots,
CSVs and every LAMMPS input/log it ran. Run through run_report.sh, which sets up the
environment; `report.py --help` lists the options. Needs only numpy and matplotlib (Debian's
python3-numpy / python3-matplotlib: run it with /usr/bin/python3).

Protocol (the same code for --short and --long, only the lengths differ):
  1. per system size: NVT (Nose-Hoover, 300 K, 0.5 fs) equilibration with the FP32 potential,
     written out with velocities (write_data); every mode then starts NVE from that state;
  2. per size and mode: NVE, 0.5 fs, with fix qnn/drift (slope, drift/std(KE), RMS), the
     energies every few steps (own least-squares fit), compute qnn/deviation against the
     FP32 file (dE/atom, force RMSE), compute rdf O-O/O-H/H-H averaged over the run;
  3. throughput: per size and MPI rank count, one LAMMPS invocation runs every mode in turn
     (same process, same atoms), so the ratios to fp32 are measured side by side;
  4. LAMMPS's own ML potentials (SNAP, ML-IAP) from the LAMMPS source tree, for scale.
"""
import argparse
import csv
import datetime
import hashlib
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DT_PS = 0.0005       # timestep, ps
TEMP = 300.0
MODES = ["fp32", "int8", "w8a16", "weight-only", "mixed", "fp64"]
# fp64 is the exact, uncompressed network of the fp32 file: the reference of the drift targets.
MODE_FILE = {"fp32": "fp32", "int8": "int8", "w8a16": "int8", "weight-only": "int8", "mixed": "mixed", "fp64": "fp32"}

# Lengths of the two protocols. Keys of nvt/nve: system sizes (atoms); 192 = examples/water/
# water.data, 1536 = water-1536.data; bench sizes are 1536 x (1, 8 via replicate 2 2 2).
PROTOCOLS = {
    "short": dict(nvt={192: 40}, nve={192: 120}, dev_every=10, sample_every=2, rdf_every=4,
                  bench_steps={192: 10}, bench_warm=1, bench_np=[1, 2], peer_steps=10),
    "long": dict(nvt={192: 2000, 1536: 2000}, nve={192: 20000, 1536: 20000}, dev_every=20,
                 sample_every=2, rdf_every=10, bench_steps={1536: 20, 12288: 3}, bench_warm=0,
                 bench_np=[1, 2], peer_steps=100),
}
DATA = {192: "examples/water/water.data", 1536: "examples/water/water-1536.data"}
BENCH_DATA = {192: ("examples/water/water.data", (1, 1, 1)),
              1536: ("examples/water/water-1536.data", (1, 1, 1)),
              12288: ("examples/water/water-1536.data", (2, 2, 2))}
PEERS = [  # (name, directory under LAMMPS examples, input, pair style description)
    ("SNAP Ta06A", "snap", "in.snap.Ta06A", "pair_style snap (Ta06A, 2J=6, + zbl)"),
    ("ML-IAP linear SNAP Ta06A", "mliap", "in.mliap.snap.Ta06A", "pair_style mliap model linear descriptor sna (+ zbl)"),
    ("ML-IAP NN Ta06A", "mliap", "in.mliap.nn.Ta06A", "pair_style mliap model nn descriptor sna (+ zbl)"),
]

LOOP_RE = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")


def die(msg):
    print(f"[report] error: {msg}", file=sys.stderr)
    sys.exit(2)


def secs(w):
    return "reused" if not math.isfinite(w) else f"{w:6.1f} s"


def log(msg):
    print(f"[report] {msg}", flush=True)


def parse_sizes(text, what):
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        m = re.fullmatch(r"\s*(\d+)\s*=\s*(\d+)\s*", item)
        if not m:
            die(f"{what}: expected SIZE=STEPS[,SIZE=STEPS...], got '{text}'")
        out[int(m.group(1))] = int(m.group(2))
    return out


# ----------------------------------------------------------------------------- environment

def sh(cmd, cwd=None):
    try:
        return subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        return ""


def cpu_model():
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
            break
    else:
        model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
        m = re.search(r"^model name\s*:\s*(.*)$", txt, re.M)
        if m and m.group(1).strip() != model:
            model += f" (/proc/cpuinfo: {m.group(1).strip()})"
        flags = re.search(r"^flags\s*:\s*(.*)$", txt, re.M)
        isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if flags and f in flags.group(1).split()]
    except OSError:
        isa = []
    return model, isa


def file_info(path):
    """sha256 prefix, git commit that last touched the file, git state (clean/modified/untracked)."""
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:16]
    rel = os.path.relpath(path, ROOT)
    if rel.startswith(".."):
        return sha, "-", "outside the repository"
    commit = sh(f"git log -1 --format=%h -- {shlex.quote(rel)}", cwd=ROOT) or "-"
    st = sh(f"git status --porcelain -- {shlex.quote(rel)}", cwd=ROOT)
    state = "clean" if not st else ("untracked" if st.startswith("??") else "modified since " + commit)
    if commit == "-" and not st:
        state = "not in git"
    return sha, commit, state


# ----------------------------------------------------------------------------- LAMMPS runner

class Runner:
    def __init__(self, args, out):
        self.lmp = args.lmp
        self.mpirun = args.mpirun
        self.out = out
        self.failures = []
        self.reuse = args.reuse
        self.env = dict(os.environ)
        self.env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive", OMPI_ALLOW_RUN_AS_ROOT="1",
                        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")

    def run(self, label, inp, logfile, np_=1, cwd=None, variables=None, timeout=None):
        """Runs LAMMPS on input `inp`; returns the log text or None (failure recorded)."""
        cmd = [self.lmp, "-in", inp, "-log", logfile, "-screen", "none", "-nocite"]
        for k, v in (variables or {}).items():
            cmd += ["-var", k, str(v)]
        if np_ > 1:
            cmd = [self.mpirun, "-np", str(np_), "--oversubscribe", "--bind-to", "none"] + cmd
        budget_marker = os.path.join(os.path.dirname(logfile), "STOPPED_BY_BUDGET")
        if self.reuse and os.path.exists(logfile) and os.path.exists(budget_marker):
            msg = open(budget_marker).read().strip()   # stopped by --nve-timeout: keep it
            self.failures.append((label, msg + " (kept from an earlier run: --reuse)", logfile))
            log(f"  STOPPED {label} (reused): {msg}")
            return None
        if self.reuse and os.path.exists(logfile):
            text = open(logfile).read()
            if "Total wall time" in text and "ERROR" not in text:
                return text, float("nan")
            if "ERROR" in text and "Last input line" in text:   # ended in a LAMMPS error: keep it
                msg = [l.strip() for l in text.splitlines() if "ERROR" in l]
                self.failures.append((label, "; ".join(msg[:3]) + " (kept from an earlier run: --reuse)", logfile))
                log(f"  FAILED {label} (reused): {msg[0]}")
                return None
        if os.path.exists(budget_marker):
            os.remove(budget_marker)
        t0 = time.time()
        try:
            p = subprocess.run(cmd, cwd=cwd or self.out, env=self.env, capture_output=True, text=True, timeout=timeout)
            rc, err = p.returncode, (p.stdout + p.stderr)
        except subprocess.TimeoutExpired:
            msg = f"{BUDGET_MSG} ({timeout:.0f} s of wall time)"
            with open(budget_marker, "w") as f:
                f.write(msg + "\n")
            self.failures.append((label, msg, logfile))
            log(f"  STOPPED {label}: {msg} (log {logfile})")
            return None
        wall = time.time() - t0
        text = open(logfile).read() if os.path.exists(logfile) else ""
        if rc != 0 or "ERROR" in text:
            msg = [l for l in (text + "\n" + err).splitlines() if "ERROR" in l] or (text + err).strip().splitlines()[-5:]
            self.failures.append((label, "; ".join(m.strip() for m in msg[:3]), logfile))
            log(f"  FAILED {label} ({wall:.0f} s): {msg[0].strip() if msg else rc} (log {logfile})")
            return None
        return text, wall


# ----------------------------------------------------------------------------- inputs

HEADER = """plugin load  {plugin}
units        metal
atom_style   atomic
atom_modify  map array
"""

NVT_IN = HEADER + """read_data    {data}
pair_style   qnn {model} mode fp32
pair_coeff   * * O H
velocity     all create {temp} {seed} mom yes rot yes dist gaussian
timestep     {dt}
fix          nvt all nvt temp {temp} {temp} 0.05
thermo_style custom step time temp pe ke etotal econserve press
thermo       {thermo}
run          {steps}
write_data   {out} nocoeff
"""

NVE_IN = HEADER + """read_data    {data}
pair_style   qnn {model} mode {mode}
pair_coeff   * * O H
timestep     {dt}
neighbor     2.0 bin
{dev}
fix          drift all qnn/drift every {sample}
compute      ke all ke
fix          energy all ave/time {sample} 1 {sample} c_thermo_pe c_ke c_thermo_temp file energy.txt format " %.15g"
compute      rdf all rdf {rdfbins} 1 1 1 2 2 2
fix          rdf all ave/time {rdf_every} {rdf_repeat} {steps} c_rdf[*] file rdf.txt mode vector format " %.8g"
fix          integrate all nve
thermo_style custom step time temp pe ke etotal press f_drift[1] f_drift[2] f_drift[3]
thermo       {thermo}
run          {steps}
variable     d1 equal f_drift[1]
variable     d2 equal f_drift[2]
variable     d3 equal f_drift[3]
variable     d4 equal f_drift[4]
variable     d5 equal f_drift[5]
variable     d6 equal f_drift[6]
print        "QNNREPORT drift ${{d1}} ${{d2}} ${{d3}} ${{d4}} ${{d5}} ${{d6}}"
"""

DEV_IN = """compute      dev all qnn/deviation {every} ref {ref}
fix          dev all ave/time {every} 1 {every} c_dev[1] c_dev[2] c_dev[3] file dev.txt format \" %.10g\""""


# Close-approach scan: molecule 2 rigidly moved along x towards molecule 1 (O at the origin,
# H at (-0.586, +-0.757, 0), i.e. pointing away from molecule 2); x = O-O distance.
# Orientation "H first": one H of molecule 2 on the O-O axis, pointing at molecule 1's O (a
# linear hydrogen bond, compressed); "H behind": both H of molecule 2 on the far side (O-O).
# (H offsets from O2 along x; the second H sits at y = 0.9267; O-H 0.9572 A, HOH 104.5 deg.)
SCAN_ORIENT = {"H first": (-0.9572, 0.2397), "H behind": (0.9572, -0.2397)}
SCAN_X0, SCAN_DX, SCAN_N = 3.6, 0.04, 66   # O-O 3.6 -> 1.0 A (issue 14's range)
SCAN_XMIN = SCAN_X0 - SCAN_DX * (SCAN_N - 1)
SCAN_FAR = 2.4     # O-O distances below this are not visited by liquid water at 300 K
SCAN_DATA = """two water molecules (qnn report close-approach scan)

6 atoms
2 atom types

-15 15 xlo xhi
-15 15 ylo yhi
-15 15 zlo zhi

Masses

1 15.999
2 1.008

Atoms # atomic

1 1 0.0 0.0 0.0
2 2 -0.586 0.757 0.0
3 2 -0.586 -0.757 0.0
4 1 3.6 0.0 0.0
5 2 2.6428 0.0 0.0
6 2 3.8397 0.9267 0.0
"""
SCAN_IN = HEADER + """read_data    scan.data
pair_style   qnn {model} mode {mode}
pair_coeff   * * O H
thermo_style custom step pe
thermo_modify norm no
variable     i loop {n}
label        loop
variable     x equal {x0}-{dx}*(${{i}}-1)
variable     xa equal v_x+({sa})
variable     xb equal v_x+({sb})
set          atom 4 x ${{x}}
set          atom 5 x ${{xa}}
set          atom 6 x ${{xb}}
run          0 post no
variable     e equal pe
variable     fx equal fx[4]+fx[5]+fx[6]
print        "QNNSCAN ${{x}} ${{e}} ${{fx}}"
next         i
jump         SELF loop
"""


def analyse_scan(text):
    """x (O-O distance, decreasing), E - E(first), F_x on molecule 2, and the energy the forces
    do not account for: E(x) - E(x0) - int_x^x0 F_x dx' (trapezoid rule; zero for a conservative
    force field up to the rule's O(dx^2) error)."""
    a = np.array([[float(v) for v in m.groups()] for m in re.finditer(r"^QNNSCAN (\S+) (\S+) (\S+)", text, re.M)])
    if a.ndim != 2 or len(a) != SCAN_N or not np.all(np.isfinite(a)):
        raise ValueError(f"expected {SCAN_N} finite QNNSCAN lines")
    x, e, f = a[:, 0], a[:, 1] - a[0, 1], a[:, 2]
    work = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * (x[:-1] - x[1:]))])
    return dict(x=x, e=e, f=f, mismatch=e - work)


def bench_input(plugin, data, rep, runs, steps, warm):
    s = HEADER.format(plugin=plugin) + f"read_data    {data}\n"
    if rep != (1, 1, 1):
        s += "replicate    %d %d %d\n" % rep
    s += f"""velocity     all create {TEMP} 4928459 mom yes rot yes dist gaussian
timestep     {DT_PS}
neighbor     2.0 bin
fix          integrate all nve
thermo       {max(steps, 1)}
"""
    for mode, path in runs:
        s += f"pair_style   qnn {path} mode {mode}\npair_coeff   * * O H\n"
        s += f'print        "QNNREPORT bench {mode}"\n'
        if warm:
            s += f"run          {warm}\n"
        s += f"run          {steps}\n"
    return s


# ----------------------------------------------------------------------------- analysis

def lsq(t, y):
    """slope, intercept, standard error of the slope (independent residuals assumed)."""
    A = np.vstack([t, np.ones_like(t)]).T
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    res = y - A @ coef
    n = len(t)
    se = math.sqrt((res @ res) / max(n - 2, 1) / ((t - t.mean()) @ (t - t.mean()))) if n > 2 else float("nan")
    return coef[0], coef[1], se


def load_table(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            rows.append([float(x) for x in line.split()])
    return np.array(rows)


def load_rdf(path):
    """Last block of a fix ave/time mode vector file: columns r, gOO, gOH, gHH."""
    blocks, cur = [], None
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            p = line.split()
            if len(p) == 2:           # block header: step, nrows
                cur = []
                blocks.append(cur)
            elif cur is not None and p:
                cur.append([float(x) for x in p])
    if not blocks or not blocks[-1]:
        raise ValueError(f"{path}: no RDF block")
    a = np.array(blocks[-1])
    # row index, c_rdf[1]=r, [2]=g11, [3]=coord11, [4]=g12, [5]=coord12, [6]=g22, [7]=coord22
    return np.column_stack([a[:, 1], a[:, 2], a[:, 4], a[:, 6]])


def first_peak(r, g, lo=2.3, hi=3.3):
    m = (r >= lo) & (r <= hi)
    i = np.argmax(g[m])
    return float(r[m][i]), float(g[m][i])


BUDGET_PREFIX = "stopped by the time budget"   # also a run stopped by hand: STOPPED_BY_BUDGET written first
BUDGET_MSG = BUDGET_PREFIX + " (--nve-timeout)"


def analyse_nve(run_dir, natoms, text, failed=None):
    """Results of one NVE run. `failed`: the LAMMPS error of a run that stopped early (e.g.
    lost atoms after the trajectory blew up); the energies written up to then are analysed,
    the fix's end-of-run values and the run-averaged RDF do not exist."""
    res = {"failed": failed, "budget": failed is not None and failed.startswith(BUDGET_PREFIX)}
    # what ended the run early, for tables and plot labels: "", "time budget", "lost atoms", "LAMMPS error"
    res["stopped_by"] = ("" if failed is None else "time budget" if res["budget"]
                         else "lost atoms" if "Lost atoms" in failed else "LAMMPS error")
    e = load_table(os.path.join(run_dir, "energy.txt"))    # step, pe, ke, temp
    if e.ndim != 2 or len(e) < 3:
        raise ValueError("fewer than 3 energy samples")
    t = e[:, 0] * DT_PS
    etot = (e[:, 1] + e[:, 2]) / natoms
    ke = e[:, 2] / natoms
    slope, _, se = lsq(t, etot)
    res["t"], res["etot"] = t, etot
    res["own_slope"] = 1000.0 * slope                        # meV/atom/ps
    res["own_slope_se"] = 1000.0 * se
    res["ke_std"] = 1000.0 * float(np.std(ke))              # meV/atom
    res["own_ratio"] = slope * (t[-1] - t[0]) / float(np.std(ke)) if np.std(ke) > 0 else float("nan")
    res["own_rms"] = 1000.0 * float(np.std(etot))
    # a trajectory that heats far beyond the thermostat's 300 K has blown up: its drift and RDF
    # describe the explosion, not the potential's accuracy
    res["unstable"] = (failed is not None and not res["budget"]) or not (np.all(np.isfinite(e)) and float(np.max(e[:, 3])) < 1000.0)
    # when the trajectory first left the physical range (T > 1000 K), and the drift before that
    hot = np.nonzero(~(e[:, 3] < 1000.0))[0]
    res["t_blowup"] = float(t[hot[0]] - t[0]) if len(hot) else float("nan")
    k = int(hot[0]) if len(hot) else len(t)
    pre = lsq(t[:k], etot[:k]) if k >= 3 else (float("nan"),) * 3
    res["pre_slope"], res["pre_slope_se"] = 1000.0 * pre[0], 1000.0 * pre[2]
    res["temp_mean"] = float(np.mean(e[:, 3]))
    res["temp_min"] = float(np.min(e[:, 3]))
    res["temp_max"] = float(np.max(e[:, 3]))
    res["nsamples"] = len(t)
    res["ps"] = float(t[-1] - t[0])
    m = re.search(r"^QNNREPORT drift (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)", text, re.M)
    if not m and failed is None:
        raise ValueError("no QNNREPORT drift line in the log")
    d = [float(x) for x in m.groups()] if m else [float("nan")] * 6
    res.update(fix_slope=d[0], fix_ratio=d[1], fix_rms=d[2], fix_n=d[3], fix_ps=d[4], fix_ke_std=d[5])
    dev = os.path.join(run_dir, "dev.txt")
    if os.path.exists(dev):
        a = load_table(dev)
        if a.ndim == 2 and len(a):
            a = a[a[:, 0] > 0] if (a[:, 0] > 0).any() else a
            res["dE_mean"] = 1000.0 * float(np.mean(a[:, 1]))           # meV/atom (signed)
            res["dE_absmax"] = 1000.0 * float(np.max(np.abs(a[:, 1])))
            res["fRMSE_mean"] = 1000.0 * float(np.mean(a[:, 2]))        # meV/A
            res["fRMSE_max"] = 1000.0 * float(np.max(a[:, 2]))
            res["fmaxdev"] = 1000.0 * float(np.max(a[:, 3]))
            res["ndev"] = len(a)
    res["rdf"] = load_rdf(os.path.join(run_dir, "rdf.txt")) if failed is None else None
    m = LOOP_RE.search(text)
    res["loop_s"] = float(m.group(1)) if m else float("nan")
    return res


def fmt(x, p=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{p}g}" if abs(x) < 1e-3 or abs(x) >= 1e5 else f"{x:.{p}f}".rstrip("0").rstrip(".") if p > 0 else f"{x:.0f}"
    return str(x)


def f3(x):
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def md_table(header, rows):
    s = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    for r in rows:
        s += "| " + " | ".join(str(c) for c in r) + " |\n"
    return s


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--short", action="store_const", dest="protocol", const="short", help="CI protocol (192 atoms, ~1-2 min)")
    g.add_argument("--long", action="store_const", dest="protocol", const="long", help="full protocol (default)")
    ap.add_argument("--out", help="report directory (default: build dir/report-<protocol>)")
    ap.add_argument("--lmp", default=os.environ.get("LMP", "lmp"))
    ap.add_argument("--mpirun", default=os.environ.get("MPIRUN", "mpirun"))
    ap.add_argument("--plugin", default=None, help="qnnplugin.so (default: $QNN_BUILD_DIR/qnnplugin.so)")
    ap.add_argument("--potentials", default=os.path.join(ROOT, "potentials"), help="directory of water-se2a.{fp32,int8,mixed}.qnn")
    for k in ("fp32", "int8", "mixed"):
        ap.add_argument(f"--{k}", default=None, help=f"the {k} file (default: POTENTIALS/water-se2a.{k}.qnn)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--nvt-steps", help="SIZE=STEPS,... equilibration lengths (overrides the protocol)")
    ap.add_argument("--nve-steps", help="SIZE=STEPS,... NVE lengths; the sizes run (192, 1536)")
    ap.add_argument("--bench-steps", help="SIZE=STEPS,... throughput runs (192, 1536, 12288); empty string: none")
    ap.add_argument("--bench-np", help="comma-separated MPI rank counts of the throughput runs")
    ap.add_argument("--nve-timeout", type=float, default=None,
                    help="wall-clock limit (s) of each NVE run; a run stopped by it is analysed up to the stop")
    ap.add_argument("--peer-steps", type=int, help="steps of the LAMMPS built-in peers (0: skip)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep runs whose runs/<run>/log.lammps finished (same --out): only the missing runs and the analysis are redone")
    ap.add_argument("--note", action="append", default=[], help="a line added to report.md (repeatable)")
    args = ap.parse_args()
    protocol = args.protocol or "long"
    P = dict(PROTOCOLS[protocol])
    if args.nvt_steps:
        P["nvt"] = parse_sizes(args.nvt_steps, "--nvt-steps")
    if args.nve_steps:
        P["nve"] = parse_sizes(args.nve_steps, "--nve-steps")
    if args.bench_steps is not None:
        P["bench_steps"] = parse_sizes(args.bench_steps, "--bench-steps")
    if args.bench_np:
        try:
            P["bench_np"] = [int(x) for x in args.bench_np.split(",") if x]
        except ValueError:
            die(f"--bench-np: expected comma-separated integers, got '{args.bench_np}'")
        if any(n < 1 for n in P["bench_np"]):
            die("--bench-np: rank counts must be >= 1")
    if args.peer_steps is not None:
        if args.peer_steps < 0:
            die("--peer-steps must be >= 0")
        P["peer_steps"] = args.peer_steps
    for size in P["nve"]:
        if size not in DATA:
            die(f"NVE size {size}: known sizes are {sorted(DATA)}")
        if size not in P["nvt"]:
            die(f"NVE size {size} has no NVT length (--nvt-steps {size}=N)")
        # whole multiples of every sampling interval (fix ave/time and the RDF block)
        q = math.lcm(P["dev_every"], P["sample_every"], P["rdf_every"])
        if P["nve"][size] < 2 * q or P["nve"][size] % q:
            die(f"NVE length {P['nve'][size]} for {size} atoms must be a positive multiple of {q} and >= {2 * q}")
    for size in P["bench_steps"]:
        if size not in BENCH_DATA:
            die(f"throughput size {size}: known sizes are {sorted(BENCH_DATA)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            die(f"--modes: unknown mode '{m}' (known: {', '.join(MODES)})")
    if "fp32" not in modes and not args.reuse:
        # With --reuse a subset adds runs to an existing report directory (e.g. two processes
        # running different modes on a 2-core machine); a last --reuse run with every mode
        # then writes the full report from all of them.
        die("--modes must include fp32: it is the reference of every comparison "
            "(without it only with --reuse, to add runs to a report directory)")

    build = os.environ.get("QNN_BUILD_DIR", os.path.join(ROOT, "build"))
    plugin = os.path.abspath(args.plugin or os.path.join(build, "qnnplugin.so"))
    if not os.path.isfile(plugin):
        die(f"no plugin at {plugin}: build it (scripts/build.sh) or set QNN_BUILD_DIR / --plugin")
    if not shutil.which(args.lmp):
        die(f"LAMMPS executable '{args.lmp}' not found: source ~/.cache/qnn/env.sh or set LMP / --lmp")
    if len(P["bench_steps"]) and max(P["bench_np"]) > 1 and not shutil.which(args.mpirun):
        die(f"'{args.mpirun}' not found (needed for the multi-rank throughput runs): set MPIRUN or --bench-np 1")
    files = {k: os.path.abspath(getattr(args, k) or os.path.join(args.potentials, f"water-se2a.{k}.qnn")) for k in ("fp32", "int8", "mixed")}
    if not os.path.isfile(files["fp32"]):
        die(f"the FP32 reference {files['fp32']} does not exist")
    out = os.path.abspath(args.out or os.path.join(build, f"report-{protocol}"))
    os.makedirs(out, exist_ok=True)
    runs_dir = os.path.join(out, "runs")
    os.makedirs(runs_dir, exist_ok=True)

    notes = list(args.note)
    active = []
    for m in modes:
        f = files[MODE_FILE[m]]
        if os.path.isfile(f):
            active.append((m, f))
        else:
            notes.append(f"mode **{m}** skipped: {os.path.relpath(f, ROOT)} does not exist (yet).")
            log(f"skipping mode {m}: {f} does not exist")
    pot_rows = []
    for k, f in files.items():
        if os.path.isfile(f):
            sha, commit, state = file_info(f)
            pot_rows.append([k, os.path.relpath(f, ROOT), commit, state, sha])
        else:
            pot_rows.append([k, os.path.relpath(f, ROOT), "-", "missing", "-"])

    model, isa = cpu_model()
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    R = Runner(args, out)
    t_start = time.time()
    log(f"protocol {protocol}, output {out}, modes {', '.join(m for m, _ in active)}")

    # 1. equilibration ---------------------------------------------------------------
    equil = {}
    for size in sorted(P["nve"]):
        d = os.path.join(runs_dir, f"nvt-{size}")
        os.makedirs(d, exist_ok=True)
        inp = os.path.join(d, "in.nvt")
        with open(inp, "w") as f:
            f.write(NVT_IN.format(plugin=plugin, data=os.path.join(ROOT, DATA[size]), model=files["fp32"], temp=TEMP,
                                  seed=4928459, dt=DT_PS, thermo=max(P["nvt"][size] // 10, 1), steps=P["nvt"][size],
                                  out="equil.data"))
        r = R.run(f"NVT {size}", inp, os.path.join(d, "log.lammps"), cwd=d)
        if r:
            equil[size] = os.path.join(d, "equil.data")
            log(f"NVT   {size:5d} atoms fp32 {P['nvt'][size]:6d} steps  {secs(r[1])}")

    # 2. NVE per mode ------------------------------------------------------------------
    nve = {}   # (size, mode) -> results
    for size in sorted(equil):
        steps = P["nve"][size]
        for mode, path in active:
            d = os.path.join(runs_dir, f"nve-{size}-{mode}")
            os.makedirs(d, exist_ok=True)
            for stale in () if args.reuse and os.path.exists(os.path.join(d, "log.lammps")) else ("energy.txt", "dev.txt", "rdf.txt"):
                if os.path.exists(os.path.join(d, stale)):
                    os.remove(os.path.join(d, stale))
            dev = "" if mode == "fp32" else DEV_IN.format(every=P["dev_every"], ref=files["fp32"])
            inp = os.path.join(d, "in.nve")
            with open(inp, "w") as f:
                f.write(NVE_IN.format(plugin=plugin, data=equil[size], model=path, mode=mode, dt=DT_PS, dev=dev,
                                      sample=P["sample_every"], rdfbins=120, rdf_every=P["rdf_every"],
                                      rdf_repeat=steps // P["rdf_every"], steps=steps, thermo=max(steps // 20, 1)))
            r = R.run(f"NVE {size} {mode}", inp, os.path.join(d, "log.lammps"), cwd=d, timeout=args.nve_timeout)
            failed = None
            if not r:
                # a run that stopped early: analyse what it wrote before, if anything
                failed = R.failures[-1][1]
                if not os.path.exists(os.path.join(d, "energy.txt")):
                    continue
                r = (open(os.path.join(d, "log.lammps")).read(), float("nan"))
            try:
                res = analyse_nve(d, size, r[0], failed)
            except (OSError, ValueError, IndexError) as e:
                R.failures.append((f"NVE {size} {mode}", f"analysis: {e}", d))
                log(f"  FAILED analysis of NVE {size} {mode}: {e}")
                continue
            nve[(size, mode)] = res
            extra = f"  dE {res['dE_mean']:+.3f} meV/atom  F-RMSE {res['fRMSE_mean']:.1f} meV/A" if "dE_mean" in res else ""
            log(f"NVE   {size:5d} atoms {mode:11s} {steps:6d} steps  {secs(r[1])}  T {res['temp_mean']:.0f} K  "
                f"drift {res['fix_slope']:+.4f} (fit {res['own_slope']:+.4f}) meV/atom/ps{extra}"
                + (f"  STOPPED after {res['ps']:.2f} ps: {failed}" if failed else ""))

    # 3. throughput ----------------------------------------------------------------------
    bench = []   # dicts
    for size in sorted(P["bench_steps"]):
        steps = P["bench_steps"][size]
        if steps <= 0:
            continue
        data, rep = BENCH_DATA[size]
        for np_ in P["bench_np"]:
            d = os.path.join(runs_dir, f"bench-{size}-np{np_}")
            os.makedirs(d, exist_ok=True)
            inp = os.path.join(d, "in.bench")
            with open(inp, "w") as f:
                f.write(bench_input(plugin, os.path.join(ROOT, data), rep, active, steps, P["bench_warm"]))
            r = R.run(f"throughput {size} np{np_}", inp, os.path.join(d, "log.lammps"), np_=np_, cwd=d)
            if not r:
                continue
            parts = re.split(r"^QNNREPORT bench (\S+)\s*$", r[0], flags=re.M)
            got = {}
            for i in range(1, len(parts), 2):
                loops = LOOP_RE.findall(parts[i + 1])
                if loops:
                    sec, procs, n, nat = loops[-1]    # the measured run (after the warm-up run)
                    sec, n, nat = float(sec), int(n), int(nat)
                    got[parts[i]] = dict(size=nat, np=int(procs), mode=parts[i], steps=n, seconds=sec,
                                         atom_steps_s=n * nat / sec, ns_day=n * DT_PS / sec * 86400 / 1000)
            for mode, _ in active:
                if mode in got:
                    b = got[mode]
                    b["ratio_fp32"] = b["atom_steps_s"] / got["fp32"]["atom_steps_s"] if "fp32" in got else float("nan")
                    bench.append(b)
            summary = ", ".join(f"{m} {got[m]['atom_steps_s']:.0f}" for m, _ in active if m in got)
            log(f"speed {size:5d} atoms {np_} rank(s) {steps} steps  {secs(r[1])}  atom-steps/s: {summary}")

    # 4. LAMMPS built-in peers ---------------------------------------------------------
    peers = []
    src = os.environ.get("QNN_LAMMPS_SOURCE_DIR", "")
    if P["peer_steps"] > 0:
        if not src or not os.path.isdir(os.path.join(src, "examples")):
            notes.append("LAMMPS built-in peers skipped: QNN_LAMMPS_SOURCE_DIR (the LAMMPS source tree) is not set.")
        for name, sub, inp, desc in PEERS if src else []:
            ex = os.path.join(src, "examples", sub)
            if not os.path.isfile(os.path.join(ex, inp)):
                notes.append(f"peer {name} skipped: {os.path.join(ex, inp)} not found")
                continue
            d = os.path.join(runs_dir, "peer-" + re.sub(r"\W+", "_", name))
            os.makedirs(d, exist_ok=True)
            r = R.run(f"peer {name}", os.path.join(ex, inp), os.path.join(d, "log.lammps"), cwd=ex,
                      variables={"nsteps": P["peer_steps"]})
            if not r:
                continue
            loops = LOOP_RE.findall(r[0])
            if loops:
                sec, procs, n, nat = loops[-1]
                sec, n, nat = float(sec), int(n), int(nat)
                peers.append(dict(name=name, style=desc, input=f"examples/{sub}/{inp}", atoms=nat, np=int(procs),
                                  steps=n, seconds=sec, atom_steps_s=n * nat / sec))
                log(f"peer  {name:25s} {nat} atoms {n} steps  {nat * n / sec:.0f} atom-steps/s")

    # 5. close-approach scan (is each mode's force the gradient of its energy?) -----------
    scan = {}   # (orientation, mode) -> analyse_scan result
    for oi, (orient, (sa, sb)) in enumerate(SCAN_ORIENT.items()):
        for mode, path in active:
            d = os.path.join(runs_dir, f"scan-{oi + 1}-{mode}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "scan.data"), "w") as f:
                f.write(SCAN_DATA)
            inp = os.path.join(d, "in.scan")
            with open(inp, "w") as f:
                f.write(SCAN_IN.format(plugin=plugin, model=path, mode=mode, n=SCAN_N, x0=SCAN_X0, dx=SCAN_DX, sa=sa, sb=sb))
            r = R.run(f"scan {orient} {mode}", inp, os.path.join(d, "log.lammps"), cwd=d)
            if not r:
                continue
            try:
                scan[(orient, mode)] = res = analyse_scan(r[0])
            except ValueError as e:
                R.failures.append((f"scan {orient} {mode}", f"analysis: {e}", d))
                log(f"  FAILED analysis of scan {orient} {mode}: {e}")
                continue
            far = res["x"] >= SCAN_FAR
            log(f"scan  {orient:8s} {mode:11s} E({SCAN_FAR} A) {res['e'][far][-1]:+.3f} eV  unaccounted energy "
                f"{np.max(np.abs(res['mismatch'][far])):.3f} eV (x >= {SCAN_FAR} A), {np.max(np.abs(res['mismatch'])):.3f} eV (all)")

    elapsed = time.time() - t_start
    load_end = os.getloadavg()

    # ------------------------------------------------------------------------- outputs
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({s for s, _ in nve})
    rows = []
    for (size, mode), r in sorted(nve.items(), key=lambda kv: (kv[0][0], MODES.index(kv[0][1]))):
        rows.append([size, mode, P["nve"][size], f"{r['ps']:.3f}", f"{r['temp_mean']:.1f}", f"{r['temp_min']:.1f}",
                     f"{r['temp_max']:.1f}", f"{r['fix_slope']:.5f}", f"{r['own_slope']:.5f}", f"{r['own_slope_se']:.5f}",
                     f"{r['fix_ratio']:.4f}", f"{r['own_ratio']:.4f}", f"{r['fix_rms']:.5f}", f"{r['own_rms']:.5f}",
                     f"{r['ke_std']:.4f}", "no" if r["unstable"] else "yes", f"{r['t_blowup']:.3f}", f"{r['pre_slope']:.5f}",
                     r["stopped_by"]])
    nve_header = ["atoms", "mode", "steps", "ps", "T_mean_K", "T_min_K", "T_max_K", "drift_fix_meV_atom_ps",
                  "drift_fit_meV_atom_ps", "drift_fit_stderr", "drift_over_kestd_fix", "drift_over_kestd_fit",
                  "etot_rms_fix_meV_atom", "etot_rms_fit_meV_atom", "ke_std_meV_atom", "stable",
                  "t_T_above_1000K_ps", "drift_before_that_meV_atom_ps", "stopped_by"]
    write_csv(os.path.join(out, "nve.csv"), nve_header, rows)

    fid_rows, rdf_rows = [], []
    rdf_stats = {}
    for (size, mode), r in sorted(nve.items(), key=lambda kv: (kv[0][0], MODES.index(kv[0][1]))):
        ref = nve.get((size, "fp32"))
        st = {}
        if ref is not None and r["rdf"] is not None and ref["rdf"] is not None and r["rdf"].shape == ref["rdf"].shape:
            rr = r["rdf"][:, 0]
            for j, pair in ((1, "OO"), (2, "OH"), (3, "HH")):
                st["maxdiff_" + pair] = float(np.max(np.abs(r["rdf"][:, j] - ref["rdf"][:, j])))
            pr, ph = first_peak(rr, r["rdf"][:, 1])
            fr, fh = first_peak(rr, ref["rdf"][:, 1])
            st.update(oo_peak_r=pr, oo_peak_g=ph, oo_peak_diff_pct=100.0 * (ph - fh) / fh)
        rdf_stats[(size, mode)] = st
        fid_rows.append([size, mode, f3(r.get("dE_mean", 0.0 if mode == "fp32" else float("nan"))),
                         f3(r.get("dE_absmax", 0.0 if mode == "fp32" else float("nan"))),
                         f3(r.get("fRMSE_mean", 0.0 if mode == "fp32" else float("nan"))),
                         f3(r.get("fRMSE_max", 0.0 if mode == "fp32" else float("nan"))),
                         f3(r.get("fmaxdev", 0.0 if mode == "fp32" else float("nan"))), r.get("ndev", 0),
                         f3(st.get("oo_peak_r", float("nan"))), f3(st.get("oo_peak_g", float("nan"))),
                         f3(st.get("oo_peak_diff_pct", float("nan"))), f3(st.get("maxdiff_OO", float("nan"))),
                         f3(st.get("maxdiff_OH", float("nan"))), f3(st.get("maxdiff_HH", float("nan")))])
        for i in range(len(r["rdf"]) if r["rdf"] is not None else 0):
            rdf_rows.append([size, mode] + [f"{x:.5f}" for x in r["rdf"][i]])
    fid_header = ["atoms", "mode", "dE_mean_meV_atom", "dE_absmax_meV_atom", "F_RMSE_mean_meV_A", "F_RMSE_max_meV_A",
                  "F_maxdev_meV_A", "n_evals", "OO_peak_r_A", "OO_peak_g", "OO_peak_diff_pct", "gOO_maxdiff", "gOH_maxdiff",
                  "gHH_maxdiff"]
    write_csv(os.path.join(out, "fidelity.csv"), fid_header, fid_rows)
    write_csv(os.path.join(out, "rdf.csv"), ["atoms", "mode", "r_A", "g_OO", "g_OH", "g_HH"], rdf_rows)
    bench_header = ["atoms", "ranks", "mode", "steps", "seconds", "atom_steps_per_s", "ns_per_day", "ratio_to_fp32"]
    bench_rows = [[b["size"], b["np"], b["mode"], b["steps"], f"{b['seconds']:.3f}", f"{b['atom_steps_s']:.1f}",
                   f"{b['ns_day']:.4f}", f"{b['ratio_fp32']:.3f}"] for b in bench]
    write_csv(os.path.join(out, "throughput.csv"), bench_header, bench_rows)
    peer_rows = [[p["name"], p["style"], p["input"], p["atoms"], p["np"], p["steps"], f"{p['seconds']:.3f}",
                  f"{p['atom_steps_s']:.1f}"] for p in peers]
    write_csv(os.path.join(out, "peers.csv"), ["name", "pair_style", "input", "atoms", "ranks", "steps", "seconds",
                                                "atom_steps_per_s"], peer_rows)

    colors = {"fp32": "k", "int8": "tab:red", "w8a16": "tab:orange", "weight-only": "tab:blue", "mixed": "tab:green", "fp64": "tab:gray"}
    plots = []

    def legend(ax, size):
        if ax.get_legend_handles_labels()[0]:   # no empty legend boxes
            ax.legend(fontsize=size)

    def save(fig, title, name):
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        plots.append((title, name))
    if sizes:
        # top row: every mode on one linear scale; bottom row: the modes that conserve energy
        # (|dE| within 10x the smallest excursion), on their own scale
        fig, axes = plt.subplots(2, len(sizes), figsize=(6 * len(sizes), 7.5), squeeze=False)
        for col, size in enumerate(sizes):
            curves = []
            for mode in MODES:
                if (size, mode) in nve:
                    r = nve[(size, mode)]
                    # a trajectory that left the physical range (T > 1000 K) is drawn up to then,
                    # with a cross where it left: past that point E(t) describes the explosion
                    k = len(r["t"])
                    if math.isfinite(r.get("t_blowup", float("nan"))):
                        k = max(1, int(np.searchsorted(r["t"] - r["t"][0], r["t_blowup"])))
                    y = 1000.0 * (r["etot"][:k] - r["etot"][0])
                    slope = r["pre_slope"] if k < len(r["t"]) else r["own_slope"]
                    note = (f", T > 1000 K at {r['t_blowup']:.2f} ps" if k < len(r["t"]) else "") + \
                           (f", stopped at {r['ps']:.2f} ps ({r['stopped_by']})" if r["stopped_by"] else "")
                    curves.append((mode, r["t"][:k], y, k < len(r["t"]), f"{mode} ({slope:+.3f} meV/atom/ps{note})"))
            smallest = min((float(np.max(np.abs(c[2]))) for c in curves), default=0.0)
            for row, keep in ((0, lambda c: True), (1, lambda c: float(np.max(np.abs(c[2]))) <= 10.0 * max(smallest, 1e-6))):
                ax = axes[row][col]
                for mode, t, y, cut, label in filter(keep, curves):
                    ax.plot(t, y, color=colors[mode], lw=0.8, label=label)
                    if cut:
                        ax.plot([t[-1]], [y[-1]], "x", color=colors[mode], ms=8)
                ax.set_xlabel("time (ps)")
                ax.set_ylabel("E_total(t) - E_total(0) (meV/atom)")
                ax.set_title(f"NVE water, {size} atoms, 0.5 fs" + ("" if row == 0 else ": the conserving modes"))
                legend(ax, 7)
        save(fig, "Total energy vs time (NVE)", "energy.png")
        for size in sizes:
            fig, axes = plt.subplots(1, 3, figsize=(15, 4))
            for j, (ax, pair) in enumerate(zip(axes, ("O-O", "O-H", "H-H"))):
                for mode in MODES:
                    if (size, mode) in nve and nve[(size, mode)]["rdf"] is not None:
                        r = nve[(size, mode)]["rdf"]
                        ax.plot(r[:, 0], r[:, j + 1], color=colors[mode], lw=1.2 if mode == "fp32" else 0.9,
                                ls="-" if mode == "fp32" else "--",
                                label=mode + (" (unstable run)" if nve[(size, mode)]["unstable"] else ""))
                ax.set_xlabel("r (A)")
                ax.set_ylabel(f"g_{pair}(r)")
                ax.set_title(f"{pair}, {size} atoms")
                legend(ax, 8)
            save(fig, f"RDFs, {size} atoms (each mode along its own trajectory)", f"rdf-{size}.png")
    if bench:
        keys = sorted({(b["size"], b["np"]) for b in bench})
        fig, ax = plt.subplots(figsize=(max(6, 2 * len(keys)), 4))
        w = 0.8 / max(len(active), 1)
        for k, (mode, _) in enumerate(active):
            vals = [next((b["atom_steps_s"] for b in bench if (b["size"], b["np"]) == key and b["mode"] == mode), 0) for key in keys]
            ax.bar(np.arange(len(keys)) + k * w, vals, w, color=colors[mode], label=mode)
        ax.set_xticks(np.arange(len(keys)) + w * (len(active) - 1) / 2)
        ax.set_xticklabels([f"{s} atoms\n{n} rank(s)" for s, n in keys])
        ax.set_ylabel("atom-steps/s")
        ax.set_title("pair_style qnn throughput (LAMMPS NVE)")
        legend(ax, 8)
        save(fig, "Throughput", "throughput.png")
    scan_rows = []
    if scan:
        orients = [o for o in SCAN_ORIENT if any(k[0] == o for k in scan)]
        fig, axes = plt.subplots(2, len(orients), figsize=(6 * len(orients), 7.5), squeeze=False)
        for col, orient in enumerate(orients):
            for mode in MODES:
                res = scan.get((orient, mode))
                if res is None:
                    continue
                far = res["x"] >= SCAN_FAR
                scan_rows.append([orient, mode, f"{res['e'][far][-1]:.4f}", f"{res['e'][-1]:.4f}",
                                  f"{np.max(np.abs(res['mismatch'][far])):.4f}", f"{np.max(np.abs(res['mismatch'])):.4f}"])
                axes[0][col].plot(res["x"], res["e"], color=colors[mode], lw=1, label=mode)
                axes[1][col].plot(res["x"], res["mismatch"], color=colors[mode], lw=1, label=mode)
            for row in (0, 1):
                ax = axes[row][col]
                ax.axvspan(SCAN_XMIN, SCAN_FAR, color="0.92", lw=0)
                ax.set_xlabel("O-O distance (A)")
                legend(ax, 8)
            axes[0][col].set_ylabel("E(x) - E(3.6 A) (eV)")
            axes[0][col].set_title(f"two molecules approaching, {orient}")
            axes[1][col].set_ylabel("E(x) - E(3.6 A) - work of the forces (eV)")
            axes[1][col].set_title("energy the forces do not account for")
        save(fig, "Close-approach scan: energy and force consistency", "scan.png")
        with open(os.path.join(out, "scan.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["orientation", "mode", "x_OO_A", "E_minus_E0_eV", "Fx_mol2_eV_per_A", "unaccounted_eV"])
            for (orient, mode), res in scan.items():
                for i in range(len(res["x"])):
                    w.writerow([orient, mode, f"{res['x'][i]:.4f}", f"{res['e'][i]:.8g}", f"{res['f'][i]:.8g}", f"{res['mismatch'][i]:.8g}"])

    # targets -----------------------------------------------------------------------------
    targets = []
    tsize = None  # set by the loop below; drift_of reads it

    def drift_of(mode):
        r = nve.get((tsize, mode))
        if r is not None and not math.isfinite(r["fix_slope"]):
            # a run that stopped early has no fix value: the own fit of its energies instead
            r = dict(r, fix_slope=r["own_slope"])
        return r

    def verdict(ok):
        return "**met**" if ok else "**not met**"

    def blew(r):
        before = (f"; T above 1000 K from t = {r['t_blowup']:.2f} ps, drift before that {r['pre_slope']:+.3f} meV/atom/ps"
                  if math.isfinite(r.get("t_blowup", float("nan"))) else "")
        if r.get("failed"):
            return f"; run stopped after {r['ps']:.2f} ps: {r['failed']}; T reached {r['temp_max']:.3g} K{before}"
        return f"; trajectory unstable: T reached {r['temp_max']:.3g} K{before}" if r["unstable"] else ""

    # every size, the longest NVE run first (the one the targets are mainly judged on)
    for tsize in sorted(sizes, key=lambda s: (-P["nve"][s], s)):
        fpr, wor, i8r = drift_of("fp32"), drift_of("weight-only"), drift_of("int8")
        if wor and fpr:
            noise = 2.0 * math.hypot(wor["own_slope_se"], fpr["own_slope_se"])
            ok1 = abs(wor["fix_slope"]) <= 0.05
            ok2 = abs(wor["fix_slope"]) <= abs(fpr["fix_slope"]) + noise
            targets.append(["weight-only drift <= 0.05 meV/atom/ps", f"{wor['fix_slope']:+.4f} ({tsize} atoms, {wor['ps']:.2f} ps{blew(wor)})", verdict(ok1 and not wor["unstable"])])
            targets.append(["weight-only drift not worse than fp32 beyond noise (2 sigma of the fits)",
                            f"abs {abs(wor['fix_slope']):.4f} vs abs {abs(fpr['fix_slope']):.4f} + {noise:.4f}", verdict(ok2)])
            if wor["unstable"] and math.isfinite(wor["pre_slope"]):
                # the same targets over the part of the run that is still water at ~300 K (for
                # fp32 too, if its run left it as well)
                tb = wor["t_blowup"]
                if fpr["unstable"] and math.isfinite(fpr["pre_slope"]):
                    fpr = dict(fpr, fix_slope=fpr["pre_slope"], own_slope_se=fpr["pre_slope_se"])
                noise = 2.0 * math.hypot(wor["pre_slope_se"], fpr["own_slope_se"])
                targets.append([f"weight-only drift <= 0.05 meV/atom/ps while T < 1000 K (first {tb:.2f} ps)",
                                f"{wor['pre_slope']:+.4f} ({tsize} atoms, {tb:.2f} ps)", verdict(abs(wor["pre_slope"]) <= 0.05)])
                targets.append(["weight-only drift while T < 1000 K not worse than fp32 beyond noise (2 sigma)",
                                f"abs {abs(wor['pre_slope']):.4f} vs abs {abs(fpr['fix_slope']):.4f} + {noise:.4f}",
                                verdict(abs(wor["pre_slope"]) <= abs(fpr["fix_slope"]) + noise)])
        else:
            targets.append(["weight-only drift <= 0.05 meV/atom/ps, not worse than fp32", "not measured (no weight-only run)", "not measured"])
        if i8r:
            targets.append(["int8 drift <= 0.5 meV/atom/ps", f"{i8r['fix_slope']:+.4f} ({tsize} atoms, {i8r['ps']:.2f} ps{blew(i8r)})", verdict(abs(i8r["fix_slope"]) <= 0.5 and not i8r["unstable"])])
        else:
            targets.append(["int8 drift <= 0.5 meV/atom/ps", "not measured (no int8 run)", "not measured"])
        for mode in ("int8", "weight-only", "mixed"):
            st = rdf_stats.get((tsize, mode))
            if st and "oo_peak_diff_pct" in st:
                rm = nve[(tsize, mode)]
                targets.append([f"{mode}: O-O RDF first peak within 2% of FP32", f"{st['oo_peak_diff_pct']:+.2f}% ({tsize} atoms{blew(rm)})",
                                verdict(abs(st["oo_peak_diff_pct"]) <= 2.0 and not rm["unstable"])])
        # issue 13: the compressed fp32 and the conserving quantized mode against the exact
        # fp64 network (its own run, same start)
        f64 = drift_of("fp64")
        for mode in ("fp32", "weight-only"):
            r = drift_of(mode)
            if r is None or f64 is None:
                continue
            noise = 2.0 * math.hypot(r["own_slope_se"], f64["own_slope_se"])
            targets.append([f"{mode} drift <= 0.05 meV/atom/ps and not worse than fp64 beyond noise (2 sigma)",
                            f"{r['fix_slope']:+.4f} vs fp64 {f64['fix_slope']:+.4f} (+ {noise:.4f}; {tsize} atoms, {r['ps']:.2f} ps{blew(r)})",
                            verdict(abs(r["fix_slope"]) <= 0.05 and abs(r["fix_slope"]) <= abs(f64["fix_slope"]) + noise
                                    and not r["unstable"])])
    # issue 14: the close-approach scan, both orientations (fp32 file)
    for orient, (label, lo, hi, start, shift) in {
            "H behind": ("O-O", 1.0, 1.6, 2.4, 0.0),
            "H first": ("intermolecular O-H", 0.7, 1.2, 1.2, -SCAN_ORIENT["H first"][0])}.items():
        res = scan.get((orient, "fp32"))
        if res is None:
            continue
        d = res["x"] - shift                       # the scanned distance, decreasing
        e = res["e"]
        if d.min() > lo + 1e-9:
            targets.append([f"scan {orient}: {label} energy rises below {hi} A down to {lo} A", f"the scan stops at {d.min():.2f} A", "not measured"])
            continue
        def at(v):
            return float(np.interp(v, d[::-1], e[::-1]))
        inside = (d < hi) & (d > lo)
        pts = np.concatenate([[at(hi)], e[inside], [at(lo)]])
        mono = bool(np.all(np.diff(pts) > 0))
        rise = at(lo) - at(start)
        targets.append([f"scan {orient} (fp32): {label} energy rises monotonically from {hi} to {lo} A and ends >= 0.5 eV above its value at {start} A",
                        f"{'monotonic' if mono else 'not monotonic'}; E({lo}) - E({start}) = {rise:+.3f} eV", verdict(mono and rise >= 0.5)])
    one = [b for b in bench if b["np"] == 1 and b["mode"] == "int8"]
    if one:
        for b in one:
            targets.append([f"int8 >= 2x fp32 atom-steps/s, 1 rank, {b['size']} atoms", f"{b['ratio_fp32']:.2f}x", verdict(b["ratio_fp32"] >= 2.0)])
    else:
        targets.append(["int8 >= 2x fp32 atom-steps/s on one rank", "not measured (no int8 run)", "not measured"])

    # report.md ------------------------------------------------------------------------
    head = sh("git rev-parse --short HEAD", cwd=ROOT)
    # the report's own files may be tracked (a committed report regenerated in place): not the code's state
    dirty = " (working tree has uncommitted changes)" if sh(
        "git status --porcelain --untracked-files=no -- . " + shlex.quote(":(exclude)" + os.path.relpath(out, ROOT)), cwd=ROOT) else ""
    lmp_version = ""
    for (size, mode), _ in nve.items():
        txt = open(os.path.join(runs_dir, f"nve-{size}-{mode}", "log.lammps")).read()
        m = re.search(r"^LAMMPS \((.*?)\)", txt, re.M)
        if m:
            lmp_version = m.group(1)
        break
    md = [f"# qnn report: energy conservation, fidelity to FP32, throughput ({protocol} protocol)\n"]
    md.append(f"- date: {started.strftime('%Y-%m-%d %H:%M %Z')}; wall time of the whole report {elapsed / 60:.1f} min" + (" (--reuse: finished runs were not redone)" if args.reuse else ""))
    md.append(f"- machine: {platform.node()}, CPU **{model}**, {os.cpu_count()} logical CPUs"
              f"{', ISA ' + ' '.join(isa) if isa else ''}; {platform.system()} {platform.release()}")
    md.append(f"- load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}: the machine is shared, "
              "so absolute speeds are noisy; the ratios to fp32 are taken within one LAMMPS process")
    md.append(f"- qnn git {head}{dirty}; LAMMPS {lmp_version or '?'}; plugin {plugin}")
    md.append("- command: `" + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "` (examples/benchmarks/run_report.sh)\n")
    md.append("## Potentials\n")
    md.append(md_table(["role", "file", "git commit (last change)", "state", "sha256[:16]"], pot_rows))
    md.append("weight-only runs the int8 file in `mode weight-only`; every deviation is against the fp32 file.\n")
    md.append("## Protocol\n")
    md.append(f"Water with the DeePMD-style qnn model of DFT water, `units metal`, timestep {DT_PS * 1000:g} fs, 1 MPI rank, OMP_NUM_THREADS=1. "
              "Per size: NVT (Nose-Hoover, 300 K, Tdamp 50 fs) with the FP32 potential from the data file, "
              "`write_data` with velocities; every mode then runs NVE from this same state. "
              f"Energies sampled every {P['sample_every']} steps; `compute qnn/deviation` (ref = FP32 file) every "
              f"{P['dev_every']} steps; `compute rdf` (120 bins to the 6 A cutoff) every {P['rdf_every']} steps, "
              "averaged over the whole NVE run by `fix ave/time`.\n")
    plen = [[s, P["nvt"][s], f"{P['nvt'][s] * DT_PS:g}", P["nve"][s], f"{P['nve'][s] * DT_PS:g}"] for s in sorted(P["nve"])]
    md.append(md_table(["atoms", "NVT steps", "NVT ps", "NVE steps", "NVE ps"], plen))
    nominal = PROTOCOLS["long"]["nve"]
    short_of = [s for s in P["nve"] if protocol == "long" and P["nve"][s] < nominal.get(s, 0)]
    if short_of:
        md.append(f"**Shortened:** the nominal long protocol is {nominal[192] * DT_PS:g} ps of NVE per mode and size "
                  f"({nominal[192]} steps); this run used " + ", ".join(f"{P['nve'][s] * DT_PS:g} ps at {s} atoms" for s in sorted(short_of)) +
                  " to fit the machine-time budget (see the throughput table for the cost per step). Drift slopes over short "
                  "windows are dominated by the fluctuations; read them with the fit's standard error.\n")
    for s in nominal:
        if protocol == "long" and s not in P["nve"]:
            md.append(f"**Not run:** NVE at {s} atoms (not in --nve-steps).\n")
    if notes:
        md.append("Notes:\n")
        md += [f"- {n}" for n in notes]
        md.append("")
    md.append("## Targets\n")
    md.append(md_table(["target", "measured", "verdict"], targets))
    md.append("## Energy conservation (NVE)\n")
    md.append("`drift (fix)` is `fix qnn/drift` (least-squares slope of (pe+ke)/N against time); `drift (fit)` is this "
              "script's own least-squares fit of the same quantity from the energies written by `fix ave/time` "
              "(± its standard error, which assumes uncorrelated residuals and so underestimates the true uncertainty). "
              "`drift/std(KE)` = slope x duration / std of the kinetic energy per atom; `E rms` = standard deviation of the "
              "total energy per atom.\n")
    md.append(md_table(["atoms", "mode", "ps", "T mean (min-max) K", "drift (fix) meV/atom/ps", "drift (fit) meV/atom/ps",
                        "drift/std(KE) fix / fit", "E rms meV/atom fix / fit", "std KE meV/atom",
                        "T > 1000 K from (ps)", "drift before that", "stopped by"],
                       [[r[0], r[1] + (" **UNSTABLE**" if r[15] == "no" else ""), r[3], f"{r[4]} ({r[5]}-{r[6]})", r[7], f"{r[8]} ± {r[9]}", f"{r[10]} / {r[11]}",
                         f"{r[12]} / {r[13]}", r[14], r[16] if r[16] != "nan" else "-", r[17] if r[16] != "nan" else "-", r[18] or "-"]
                        for r in rows]))
    md.append("## Fidelity to FP32 along each mode's own trajectory\n")
    md.append("dE = (E_mode - E_fp32)/N per evaluation (signed mean, max |.|); F RMSE = per-component RMS of F_mode - F_fp32 "
              "(mean and max over evaluations); RDF columns compare each mode's run-averaged RDF with the fp32 run's "
              "(different trajectories from the same start, so part of the difference is sampling noise: compare with "
              "the fp32-vs-fp32 scale of fluctuations, i.e. the run length).\n")
    md.append(md_table(["atoms", "mode", "dE mean meV/atom", "max abs dE", "F RMSE mean meV/A", "F RMSE max", "max abs dF meV/A",
                        "evals", "O-O peak r A", "O-O peak g", "peak diff %", "max abs dg OO", "OH", "HH"], fid_rows))
    if scan_rows:
        # the closest O-O distance sampled by the fp32 runs (first bin with g_OO > 0.01)
        closest = [r["rdf"][np.argmax(r["rdf"][:, 1] > 0.01), 0] for (size, mode), r in nve.items()
                   if mode == "fp32" and r.get("rdf") is not None and np.any(r["rdf"][:, 1] > 0.01)]
        oo_closest = f" (the fp32 runs of this report: g_OO < 0.01 below {min(closest):.3f} A, the bin centre)" if closest else ""
        md.append("## Close-approach scan: are the forces the gradient of the energy?\n")
        md.append("Two water molecules, molecule 2 moved rigidly along the O-O axis from 3.6 A to "
                  f"{SCAN_XMIN:.2f} A in {SCAN_DX} A steps, one `run 0` per point (runs/scan-*). "
                  "'unaccounted' = max over the path of |E(x) - E(3.6 A) - work of the force on molecule 2| "
                  "(trapezoid rule; a conservative force field gives only the rule's O(dx^2) error, so fp32 shows "
                  f"that floor). The region below O-O {SCAN_FAR} A (grey in scan.png) is not visited by liquid water at "
                  f"300 K{oo_closest}. Energy the forces do not account for is energy an NVE trajectory gains or loses "
                  "when it moves through such a region.\n")
        md.append(md_table(["orientation", "mode", f"E({SCAN_FAR} A) - E(3.6 A) eV", "E(shortest) - E(3.6 A) eV",
                            f"unaccounted, x >= {SCAN_FAR} A (eV)", "unaccounted, whole path (eV)"], scan_rows))
    md.append("## Throughput\n")
    md.append("NVE of water (`replicate 2 2 2` of water-1536.data for 12288 atoms), no deviation compute; every mode in the "
              "same LAMMPS process, one after the other, " + (f"after a {P['bench_warm']}-step warm-up run each; " if P["bench_warm"] else "the timed loop excludes the setup (first force evaluation); ")
              + "atom-steps/s = steps x atoms / LAMMPS loop time; ratio = mode / fp32 of the same process.\n")
    md.append(md_table(["atoms", "ranks", "mode", "steps", "loop s", "atom-steps/s", "ns/day", "x fp32"], bench_rows))
    if peers:
        md.append("LAMMPS built-in ML potentials with their own shipped inputs (bcc tantalum, a different system and "
                  f"different cost model: **for scale only**, not comparable to water), {P['peer_steps']} steps, 1 rank:\n")
        md.append(md_table(["peer", "pair style", "input (LAMMPS examples/)", "atoms", "ranks", "steps", "loop s", "atom-steps/s"], peer_rows))
    if R.failures:
        md.append("## Failures\n")
        md.append(md_table(["run", "error", "log"], [[a, b.replace("|", "/"), os.path.relpath(c, out)] for a, b, c in R.failures]))
    md.append("## Plots\n")
    for title, png in plots:
        md.append(f"### {title}\n\n![{title}]({png})\n")
    md.append("## Files\n")
    md.append("nve.csv, fidelity.csv, rdf.csv, throughput.csv, peers.csv, scan.csv; runs/*/ hold each LAMMPS input, log and the "
              "raw energy.txt / dev.txt / rdf.txt.\n")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(md))

    # summary -------------------------------------------------------------------------
    print()
    print(f"{'atoms':>6} {'mode':11s} {'ps':>6} {'T K':>6} {'drift fix':>10} {'drift fit':>10} {'dE meV':>8} {'F RMSE':>8} {'OO pk %':>8}")
    for (size, mode), r in sorted(nve.items(), key=lambda kv: (kv[0][0], MODES.index(kv[0][1]))):
        st = rdf_stats.get((size, mode), {})
        print(f"{size:6d} {mode:11s} {r['ps']:6.2f} {r['temp_mean']:6.1f} {r['fix_slope']:10.4f} {r['own_slope']:10.4f} "
              f"{r.get('dE_mean', 0.0):8.3f} {r.get('fRMSE_mean', 0.0):8.2f} {st.get('oo_peak_diff_pct', 0.0):8.2f}")
    for b in bench:
        print(f"speed {b['size']:6d} atoms {b['np']} rank(s) {b['mode']:11s} {b['atom_steps_s']:10.0f} atom-steps/s "
              f"{b['ns_day']:.4f} ns/day  x{b['ratio_fp32']:.2f}")
    for p in peers:
        print(f"peer  {p['name']:25s} {p['atom_steps_s']:10.0f} atom-steps/s")
    for t in targets:
        print(f"target: {t[0]}: {t[1]} -> {t[2].strip('*')}")
    log(f"report: {os.path.join(out, 'report.md')} ({elapsed:.0f} s)")
    if R.failures:
        log(f"{len(R.failures)} run(s) failed: " + "; ".join(a for a, _, _ in R.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
