"""Execute the course notebooks in order (what `make run` does).

Each notebook runs top to bottom in a fresh kernel on the detected profile (or COURSE_PROFILE).
Executed copies go to outputs/executed/, figures to figures/, numbers to results/. On the reference profile
(`cpu`) every notebook that ran to the end is also written back to notebooks/ with its outputs, cleaned and labelled
with the run (scripts/reference_outputs.py), so that GitHub and Colab show them; a failed notebook, or a run on any
other profile, leaves notebooks/ as it is. The wall time
of every notebook is written to results/course_run_times.json, under the profile and the precision it ran in
("cpu-bf16", "cpu-fp32") with the CPU it ran on and its matrix-product rate measured just before (the
yardstick scripts/cost_check.py compares the cost model with): a benchmark of the course itself.

Usage: python scripts/run_course.py [name-prefix ...]     e.g.  python scripts/run_course.py 01 02
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.paths import outputs_dir, results_dir  # noqa: E402
from helpers.profiles import get_profile  # noqa: E402


def _script_module(name: str):
    """A module of scripts/ loaded by path (scripts/ is not put on sys.path: its names could shadow packages)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


reference_outputs = _script_module("reference_outputs")

CELL_TIMEOUT_S = 1800
RUNS_LAST = "07_method_comparison"


def run_key(profile) -> str:
    """Where a run's times go in course_run_times.json: the profile and the precision it ran in ("cpu-fp32")."""
    return f"{profile.name}-{profile.precision}"


def cpu_kind() -> str:
    """The CPU model, whether it has native bf16, and any instruction-set limit set for oneDNN/ATen."""
    from helpers.hardware import BF16_FLAGS, cpu_flags, cpu_model

    flags = cpu_flags()
    kind = "flags unknown" if flags is None else ("native bf16" if flags & set(BF16_FLAGS) else "no native bf16")
    limits = [f"{v}={os.environ[v]}" for v in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(v)]
    return f"{cpu_model()}, {os.cpu_count()} cores, {kind}" + (f", limited by {' '.join(limits)}" if limits else "")


def matmul_rate(profile) -> dict[str, float] | None:
    """GFLOP/s of a matrix product at the model's shapes in fp32 and in the precision the profile runs in, measured
    just before a notebook (helpers.hardware.matmul_gflops); None on GPU profiles."""
    from helpers.hardware import matmul_gflops

    if profile.needs_cuda:
        return None
    kinds = {"fp32", profile.precision if profile.precision in ("fp32", "bf16") else "fp32"}
    return {k: round(matmul_gflops(k), 1) for k in sorted(kinds)}


def cells_of(nb) -> list[tuple[str, str]]:
    """(type, source) of every cell: what must not change between reading a notebook and writing its outputs."""
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


def write_reference(nb_path: Path, executed, info: dict) -> bool:
    """Write the executed notebook, cleaned and stamped with ``info``, over ``nb_path``; refused (False, with a
    line saying so) when the file changed while the notebook ran, so that no edit is lost."""
    current = nbformat.read(nb_path, as_version=4)
    if cells_of(current) != cells_of(executed):
        print(f"=== {nb_path.name} changed while it ran: its outputs were NOT written to notebooks/; run it again "
              f"(python scripts/run_course.py {nb_path.name[:2]}).")
        return False
    nb = reference_outputs.clean(copy.deepcopy(executed), ROOT)
    reference_outputs.write(reference_outputs.stamp(nb, info), nb_path)
    print(f"=== {nb_path.name}: outputs written to notebooks/{nb_path.name} as the reference run")
    return True


REUSE_LINE = re.compile(r"^(?P<what>.+?): reusing .+?, made by (?P<by>.+?) \((?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\)")


def reused_from_earlier_runs(nb, started: str) -> list[str]:
    """What a notebook reused that was made before this run ``started`` ("%Y-%m-%d %H:%M:%S"): an adapter, a merged
    model or a quantized checkpoint of an earlier run with the same inputs (the pipeline prints "X: reusing <folder>,
    made by <notebook> (<time>)"). Its making is not in this run's time; the run-time table says so."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in "".join(output.get("text", "")).splitlines():
                match = REUSE_LINE.match(line.strip())
                if match and match["when"] < started:
                    found.append(f"{match['what']} (made by {match['by']}, {match['when']})")
    return sorted(set(found), key=found.index)


def main(prefixes: list[str]) -> int:
    profile = get_profile()
    print(f"Running the course on {profile.summary()}")
    # 07 compares every method, 08's GRPO model included: it runs last, so that it reuses 08's adapter
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"), key=lambda nb: (nb.stem == RUNS_LAST, nb.name))
    if prefixes:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(p) for p in prefixes)]
        if not notebooks:
            print(f"No notebook matches {prefixes}; available: {[n.name for n in (ROOT / 'notebooks').glob('*.ipynb')]}")
            return 2
    # Every kernel runs the same profile; helpers.setup() in each notebook switches the Hub off on tiny/cpu.
    os.environ.setdefault("COURSE_PROFILE", profile.name)
    # the kernels import helpers from this checkout even where `pip install -e .` has not run
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    times_path = results_dir() / "course_run_times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    failed = []
    started = time.strftime("%Y-%m-%d %H:%M:%S")   # artifacts made before this were made by an earlier run
    reference = profile.name == reference_outputs.REFERENCE_PROFILE
    if not reference:
        print(f"Profile {profile.name} is not the reference profile ({reference_outputs.REFERENCE_PROFILE}): "
              "notebooks/ is left as it is; the executed copies go to outputs/executed/ only.")
    for nb_path in notebooks:
        print(f"\n=== {nb_path.name} ...", flush=True)
        nb = nbformat.read(nb_path, as_version=4)
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(nb_path.parent)}})
        rate = matmul_rate(profile)   # the yardstick for this notebook's time: measured in the same run
        start = time.perf_counter()
        try:
            client.execute()
            status = "ok"
        except CellExecutionError as exc:
            status = "failed"
            failed.append(nb_path.name)
            print(str(exc)[-3000:])
        seconds = time.perf_counter() - start
        out = outputs_dir("executed") / nb_path.name
        nbformat.write(nb, out)
        print(f"=== {nb_path.name}: {status} in {seconds:.0f} s -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        date, cpu = time.strftime("%Y-%m-%d"), cpu_kind()
        if reference and status == "ok":
            write_reference(nb_path, nb, reference_outputs.run_info(profile, seconds, cpu, rate, date))
        times.setdefault(run_key(profile), {})[nb_path.stem] = {"seconds": round(seconds, 1), "status": status,
                                                                "date": date, "cpu": cpu, "matmul_gflops": rate}
        reused = reused_from_earlier_runs(nb, started)
        if reused:
            times[run_key(profile)][nb_path.stem]["reused_from_earlier_runs"] = reused
            print(f"    its time leaves out the making of what it reused from an earlier run: {'; '.join(reused)}")
        tmp = times_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(times, indent=2) + "\n")
        tmp.replace(times_path)
    print("\nWall time per notebook on profile", run_key(profile))
    for name, rec in times.get(run_key(profile), {}).items():
        print(f"  {name:<32} {rec['seconds']:>7.0f} s  {rec['status']}")
    if reference:   # the prose's registered claims about the reference numbers (helpers/claims.py), re-checked
        from helpers import claims

        broken = claims.check(claims.load_results(results_dir()))
        print(f"\nClaims in the notebooks' prose: {len(claims.CLAIMS) - len(broken)} of {len(claims.CLAIMS)} hold or "
              "are not checked" + ("." if not broken else "; these no longer hold (python -m helpers.claims):"))
        for claim, what in broken:
            print(f"  FAILS {claim.id} ({claim.where}): {what}")
    if reference:   # the README's results table and the notebooks' CPU budget lines, rendered from what was just written
        import subprocess

        for script in ("update_readme.py", "sync_estimates.py"):
            subprocess.run([sys.executable, str(ROOT / "scripts" / script)], check=False)
    if failed:
        print(f"\nFAILED: {failed}. The executed copies under outputs/executed/ show the error cell.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
