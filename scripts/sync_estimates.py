"""Write the cost model's estimates (helpers.cost) into the README and into each notebook's budget cell, and the
README's tables of `make bench` (results/bench_cpu-*.json).

The README's "Cost model" table (between its estimates markers) and each notebook's "**On a GPU**" line are
rendered from helpers.cost and results/cost_check.json, and each notebook's "**On a CPU with 2 cores**" line from the
times `make run` measured (results/course_run_times.json), never typed; both lines go right after the notebook's
"**Budget**" paragraph. tests/test_cost.py fails while any of them is out of step. Run it after changing a profile's
sizes or the cost model, and after `make run`:

    python scripts/sync_estimates.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench as bench_script  # noqa: E402  (scripts/bench.py: the roofline arithmetic)
from helpers import cost  # noqa: E402
from helpers.profiles import PROFILES, training_memory_gb  # noqa: E402

START, END = "<!-- estimates:start -->", "<!-- estimates:end -->"
GPU_LINE = "**On a GPU**"
GPUS = ("t4", "l4", "a100")


def readme_block(cost_check: dict | None = None) -> str:
    """The README's table of estimates (every notebook on every GPU profile) and, when there is one, the CPU check."""
    lines = ["| notebook | " + " | ".join(f"`{g}`: fresh runtime / artifacts on Drive, peak" for g in GPUS) + " |",
             "|---|" + "---|" * len(GPUS)]
    for nb in cost.notebooks():
        cells = []
        for g in GPUS:
            fresh, kept = cost.estimate(PROFILES[g], nb), cost.estimate(PROFILES[g], nb, fresh_runtime=False)
            cells.append(f"{fresh.minutes:.1f} / {kept.minutes:.1f} min, {fresh.memory_gb:.1f} GB")
        lines.append(f"| {nb} | " + " | ".join(cells) + " |")
    lines += ["", "| profile | model | precision | SFT steps × batch × max_length | DPO steps × pairs | "
              "estimated LoRA SFT peak (with / without gradient checkpointing) |", "|---|---|---|---|---|---|"]
    for g in GPUS:
        p = PROFILES[g]
        on, off = (training_memory_gb(p, c)["total"] for c in (True, False))
        lines.append(f"| `{g}` | {p.model_id} | {p.precision} | {p.sft_steps} × {p.train_batch_size} × {p.max_length} | "
                     f"{p.dpo_steps} × {p.dpo_batch_size} | {on:.1f} / {off:.1f} GB |")
    lines += ["", "Rates assumed (`helpers.cost.DEVICES`; estimates, not measurements):", ""]
    lines += [f"- {d.name}: {d.matmul_tflops:g} TFLOPS effective, {d.bandwidth_gbs:g} GB/s, {1000 * d.step_overhead_s:g} ms "
              f"per forward call, {d.quant_layer_overhead_s:g} s per quantized Linear, download {d.download_mbs:g} MB/s, "
              f"install {d.install_s:g} s; planned within {d.memory_gb:g} GB" for d in cost.DEVICES.values()]
    if cost_check and cost_check.get("rows"):
        lines += ["", "The same model on the `cpu` profile, with the matrix-product rate each run measured just before "
                  "the notebook (`scripts/cost_check.py`, `results/cost_check.json`):", "",
                  "| run | notebook | CPU | date | GFLOP/s | estimate | measured | measured / estimate |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in cost_check["rows"]:
            lines.append(f"| {r['run']} | {r['notebook']}{' (rebuilds counted)' if r.get('rebuilds_counted') else ''} | "
                         f"{r['cpu']} | {r['date']} | {r['matmul_gflops']:.0f} | {r['estimate_s']:.0f} s | "
                         f"{r['measured_s']:.0f} s | {r['measured_over_estimate']:.2f} |")
        ratios = [r["measured_over_estimate"] for r in cost_check["rows"]]
        lines += ["", f"On these runs the measured time was {min(ratios):.2f} to {max(ratios):.2f} times the estimate: "
                  "read the GPU minutes above as good to about that factor until a GPU measures them."]
    return "\n".join(lines) + "\n"


BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCH_FILES = ("bench_cpu-bf16.json", "bench_cpu-fp32.json")   # one per CPU kind: native bf16, and without it


def bench_section(results: Path = ROOT / "results") -> str:
    """The README's bench block: a table per CPU kind that has a results/bench_cpu-*.json."""
    reports = [json.loads((results / name).read_text()) for name in BENCH_FILES if (results / name).is_file()]
    return "\n".join(bench_block(r) for r in reports) if reports else bench_block(None)


def bench_block(bench: dict | None) -> str:
    """The README's table of one results/bench_cpu-*.json (make bench): each hot path's time, work and share of the
    limit."""
    if not bench:
        return "No `results/bench_cpu-*.json` yet: run `make bench`.\n"
    lim = bench["limits"]
    lines = [f"`make bench` on `{bench['profile']}` ({bench.get('cpu', '?')}, precision {bench['precision']}, "
             f"{bench['written'][:10]}): limits measured in the same process, matmul {lim['matmul_gflops']['fp32']:.0f} "
             f"GFLOP/s fp32 and {lim['matmul_gflops']['bf16']:.0f} GFLOP/s bf16, copy bandwidth {lim['bandwidth_gbs']:.1f} GB/s."
             + ("" if "training_head" in bench else " This run predates `helpers.training._compact_on_cpu`: its training "
                "steps scored every position through the LM head, prompt and padding included (more work, more time)."),
             "", "| path | seconds | work | achieved | share of the limit |", "|---|---|---|---|---|"]
    for r in bench["paths"]:
        if "gflop" not in r:   # work not counted (a child process): the estimate is shown as such
            work, rate = f"≤ {r.get('estimated_gflop_upper_bound', 0):.0f} GFLOP (estimated)", "not measured"
        else:
            work = f"{r['gflop']:.0f} GFLOP" + (f", {r['gb_moved']:.1f} GB read" if "gb_moved" in r else "")
            rate = f"{r['achieved_gflops']:.0f} GFLOP/s" + (f", {r['achieved_gbs']:.1f} GB/s" if "achieved_gbs" in r else "")
        shares = [f"{100 * r[k]:.0f}% of {name}" for k, name in (("share_of_matmul_limit", f"{r['precision']} matmul"),
                                                                  ("share_of_bandwidth", "bandwidth")) if k in r]
        if "gflop" in r and "gb_moved" in r:   # both bounds apply: say which binds (recomputed for older files)
            bound, kind = bench_script.roofline(r["gflop"] * 1e9, r["gb_moved"] * 1e9,
                                                lim["matmul_gflops"][r["precision"]], lim["bandwidth_gbs"])
            shares.append(f"{kind}-bound: {r['seconds'] / bound:.1f}× its roofline time")
        lines.append(f"| {r['path']} | {r['seconds']:.2f} | {work} | {rate} | {'; '.join(shares) or 'not claimed (estimated work)'} |")
    return "\n".join(lines) + "\n"


def gpu_line(notebook: str) -> str:
    return (f"{GPU_LINE}, estimated from the profile's sizes by `helpers.cost`, not measured (no GPU has run this "
            f"course yet; README, *Cost model*): {cost.budget_line(notebook, GPUS)}")


CPU_LINE = "**On a CPU with 2 cores**"
# course_run_times.json keys: the `cpu` profile in fp32 (CPUs without bf16 instructions, most laptops) and in bf16
CPU_RUNS = (("cpu-fp32", "where the CPU has no bf16 instructions, as in most laptops (fp32"),
            ("cpu-bf16", "where it has them, as recent server CPUs do (bf16"))


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"


def cpu_line(notebook: str, times: dict | None) -> str:
    """The notebook's measured time on the `cpu` profile (2 cores) from results/course_run_times.json: in fp32, what
    most laptops run, and in bf16; "not measured yet" where `make run` has not timed it to the end."""
    parts = []
    for key, what in CPU_RUNS:
        rec = (times or {}).get(key, {}).get(notebook)
        if rec and rec.get("status") == "ok":
            reused = ", reusing what an earlier run had made: README, *Results*, (r)" if rec.get("reused_from_earlier_runs") else ""
            parts.append(f"about {_minutes(rec['seconds'])} {what}, {rec['date']}{reused})")
    if not parts:
        return (f"{CPU_LINE}: not measured yet; `make run` on the `cpu` profile times it "
                f"(`python scripts/run_course.py {notebook[:2]}`).")
    return (f"{CPU_LINE}, measured by `make run` (`results/course_run_times.json`): " + "; ".join(parts)
            + ". README, *CPU precision*, says which CPUs ran it and how to tell whether yours has bf16 instructions.")


def synced_notebook(nb: dict, notebook: str, times: dict | None = None) -> dict:
    """``nb`` with today's GPU estimate and measured CPU time (``times``: results/course_run_times.json) right after
    its "**Budget**" paragraph, replacing the lines an earlier sync wrote wherever they were."""
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and "**Budget**" in text:
            lines = [line for line in text.split("\n") if not line.startswith((GPU_LINE, CPU_LINE))]
            at = next(i for i, line in enumerate(lines) if "**Budget**" in line)
            while at < len(lines) and lines[at].strip():
                at += 1
            lines[at:at] = ["", gpu_line(notebook), "", cpu_line(notebook, times), ""]
            kept = []
            for line in lines:   # one blank line between paragraphs, none at the end
                if line.strip() or (kept and kept[-1].strip()):
                    kept.append(line)
            while kept and not kept[-1].strip():
                kept.pop()
            cell["source"] = "\n".join(kept).splitlines(keepends=True)
            return nb
    raise SystemExit(f"{notebook}: no markdown cell with **Budget**: add one (see notebook 01).")


def run_times() -> dict | None:
    path = ROOT / "results" / "course_run_times.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> int:
    check_path = ROOT / "results" / "cost_check.json"
    check = json.loads(check_path.read_text()) if check_path.is_file() else None
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text:
        raise SystemExit(f"README.md has no {START} ... {END} block.")
    new = re.sub(f"{re.escape(START)}.*?{re.escape(END)}", lambda _: f"{START}\n{readme_block(check)}{END}", text, flags=re.S)
    if BENCH_START in new:
        new = re.sub(f"{re.escape(BENCH_START)}.*?{re.escape(BENCH_END)}",
                     lambda _: f"{BENCH_START}\n{bench_section()}{BENCH_END}", new, flags=re.S)
    if new != text:
        readme.write_text(new)
        print("README: estimates updated")
    times = run_times()
    for nb_name in cost.notebooks():
        path = ROOT / "notebooks" / f"{nb_name}.ipynb"
        nb = json.loads(path.read_text())
        before = json.dumps(nb)
        nb = synced_notebook(nb, nb_name, times)
        if json.dumps(nb) != before:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            print(f"{path.name}: GPU estimate and CPU time updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
