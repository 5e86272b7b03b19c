"""How wrong is the cost model? Its estimate for the ``cpu`` profile against the notebooks' measured times.

``helpers.cost`` plans the GPU profiles from assumed rates; on a CPU the same model can be checked. For every
notebook in ``results/course_run_times.json`` that recorded the machine's matrix-product rate in the same run
(``scripts/run_course.py`` measures it just before each notebook), this builds a CPU device from that rate, estimates
the notebook (on the run's precision, nothing rebuilt that the run found made, no install) and prints the estimate
next to the measured time. The ratio measured / estimate is the model's error on that CPU kind; it is written to
``results/cost_check.json`` and shown in the README ("Cost model").

    python scripts/cost_check.py                 # every run key that has rates
    python scripts/cost_check.py --rebuilt 02 05 # these notebooks ran on a fresh clone: count their rebuilds

The committed check: notebooks 05 (first, on a fresh clone: it rebuilt 01's and 02's models) and 01 on `cpu` in bf16,
and 01 in fp32 with oneDNN and ATen limited to AVX2, each in a fresh clone; their times are results/cost_check_runs.json:

    python scripts/cost_check.py --times results/cost_check_runs.json --rebuilt 05
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import cost  # noqa: E402
from helpers.profiles import PROFILES  # noqa: E402


def check(times: dict, rebuilt: set[str], efficiency: float | None = None) -> list[dict]:
    """One row per notebook that has a rate: estimate and measured seconds, their ratio. Pure: tested."""
    rows = []
    for key, notebooks in sorted(times.items()):
        name, _, precision = key.partition("-")
        if name != "cpu" or precision not in ("bf16", "fp32"):
            continue
        profile = replace(PROFILES["cpu"], precision=precision)
        for notebook, record in notebooks.items():
            rate = (record.get("matmul_gflops") or {}).get(precision)
            if notebook not in cost.NOTEBOOKS or record.get("status") != "ok" or not rate:
                continue
            device = cost.cpu_device(rate, **({"efficiency": efficiency} if efficiency else {}))
            fresh = notebook[:2] in rebuilt
            est = cost.estimate(profile, notebook, device, fresh_runtime=fresh, install=False)
            rows.append({"run": key, "notebook": notebook, "cpu": record.get("cpu", "?"), "date": record.get("date"),
                         "matmul_gflops": rate, "estimate_s": round(est.seconds, 1), "measured_s": record["seconds"],
                         "measured_over_estimate": round(record["seconds"] / est.seconds, 2),
                         "rebuilds_counted": fresh})
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", default=str(ROOT / "results" / "course_run_times.json"))
    parser.add_argument("--rebuilt", nargs="*", default=[], help="notebook numbers whose run rebuilt 01/02's models")
    parser.add_argument("--out", default=str(ROOT / "results" / "cost_check.json"))
    args = parser.parse_args(argv)
    path = Path(args.times)
    if not path.is_file():
        print(f"{path} does not exist: run `make run` (or scripts/run_course.py 01 05) first.")
        return 2
    rows = check(json.loads(path.read_text()), set(args.rebuilt))
    if not rows:
        print(f"No notebook in {path} recorded the machine's matrix-product rate (runs before rates were recorded): "
              "run scripts/run_course.py again, then this.")
        return 2
    print(f"{'run':<9} {'notebook':<27} {'GFLOP/s':>8} {'estimate':>9} {'measured':>9} {'measured/est':>12}")
    for r in rows:
        print(f"{r['run']:<9} {r['notebook']:<27} {r['matmul_gflops']:>8.0f} {r['estimate_s']:>8.0f}s "
              f"{r['measured_s']:>8.0f}s {r['measured_over_estimate']:>12.2f}")
    Path(args.out).write_text(json.dumps({"rows": rows, "assumptions": {
        "cpu_efficiency": cost.cpu_device(1.0).source, "note": "estimate = helpers.cost with the CPU's measured rate"}},
        indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
