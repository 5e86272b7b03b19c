"""The notebooks are committed with the outputs of the reference run (`make run` on the `cpu` profile), so that a
reader on GitHub or Colab sees the tables, curves and verdicts without running anything.

scripts/run_course.py calls :func:`clean` and :func:`stamp` on every notebook that ran to the end on the `cpu`
profile and writes it back to notebooks/. :func:`clean` scrubs what would tie an output to one machine or one run
(absolute paths, progress-bar redraws, ANSI colours, widget views, timing metadata); :func:`stamp` records the run
(profile, date, CPU, matmul rate, wall time) in the notebook's metadata and in a note in its first cell, and the
hash of each code cell's source in that cell's metadata. :func:`stale_cells` then tells which outputs no longer
come from the current code (tests/test_reference_outputs.py).

    python scripts/reference_outputs.py check                      # stale cells per notebook; exit 1 if any
    python scripts/reference_outputs.py clean notebooks/05_*.ipynb # scrub a notebook's outputs in place
    python scripts/reference_outputs.py reclean                    # the outputs again from outputs/executed/,
                                                                   # after a change to clean()
    python scripts/reference_outputs.py reclean --drop-bars NB...  # outputs/executed/ holds another run of NB:
                                                                   # only drop the bars shown at their first draw
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REFERENCE_PROFILE = "cpu"
META_KEY = "reference_run"
NOTE_START, NOTE_END = "<!-- reference-run:start -->", "<!-- reference-run:end -->"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# a tqdm bar's text: "Loading weights:   0%|          | 0/272 ...", or one without a total: "Writing: 0it [00:00, ...]"
PROGRESS_TEXT = re.compile(r"\d+%\||\d+it \[\d+:\d\d")
BINARY_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")
TIMING_KEYS = ("execution", "ExecuteTime")


def refresh(name: str | None = None) -> str:
    """How to refresh the reference outputs: all notebooks, or the one called ``name``."""
    one = f"`python scripts/run_course.py {name[:2] if name else '03'}`"
    return f"`make run` on the `cpu` profile, or {one} for {'this' if name else 'one'} notebook"


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
SITE_PACKAGES = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][^/\\\s'\"<>():,;]+)+[/\\](?:site|dist)-packages(?![\w-])")
# absolute paths that name a machine, a user or one run; what clean leaves must match none (tests use it too)
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|tmp|root|Users)/"
                          r"|(?<![\w<])/(?:[^/\s'\"<>]+/)+(?:site|dist)-packages"
                          r"|\b[A-Za-z]:\\(?:Users|Windows)\\")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def source_hash(source) -> str:
    """First 16 hex digits of the sha256 of a cell's source (a string, or nbformat's list of lines)."""
    return hashlib.sha256(_text(source).encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- clean

def path_replacements(root: Path | str) -> list[tuple[re.Pattern, str]]:
    """(pattern, replacement) pairs, most specific first: site-packages, the standard library, the repository,
    the cache and artifact folders set by environment, the temp folder, $HOME and any other home or /work folder."""
    def literal(path, repl):
        return (re.compile(r"(?<![\w.~-])" + re.escape(str(path).rstrip("/\\")) + r"(?![\w.-])"), repl)

    pairs = [(SITE_PACKAGES, "<site-packages>")]
    stdlib = {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")} - {None}
    pairs += [literal(p, "<stdlib>") for p in sorted(stdlib, key=len, reverse=True)]
    roots = {str(root), str(Path(root).resolve()), os.path.realpath(root)}
    pairs += [literal(r, ".") for r in sorted(roots, key=len, reverse=True)]
    if not Path(sys.prefix).resolve().is_relative_to(Path(root).resolve()):
        pairs.append(literal(sys.prefix, "<venv>"))
    for env, repl in (("COURSE_ARTIFACTS", "<artifacts>"), ("COURSE_CACHE", "<cache>"), ("HF_HOME", "<hf-home>")):
        if os.path.isabs(os.environ.get(env, "")) and len(os.environ[env].rstrip("/")) > 1:
            pairs.append(literal(os.environ[env], repl))
    tmp = tempfile.gettempdir()
    for t in {tmp, os.path.realpath(tmp), "/tmp"}:
        pairs.append((re.compile(r"(?<![\w.~-])" + re.escape(t.rstrip("/")) + r"/[^/\s'\"<>():,;]+"), "<tmp>"))
    home = os.path.expanduser("~")
    if len(home) > 1:
        pairs.append(literal(home, "~"))
    pairs += [(re.compile(r"(?<![\w.~-])/(?:home|Users)/[^/\s'\"<>():,;]+"), "~"),
              (re.compile(r"(?<![\w.~-])/root(?![\w.-])"), "~"),
              (re.compile(r"(?<![\w.~-])/work/[^/\s'\"<>():,;]+"), "<work>")]
    return pairs


def scrub_paths(text: str, pairs: list[tuple[re.Pattern, str]]) -> str:
    for pattern, repl in pairs:
        text = pattern.sub(repl, text)
    return text


def collapse_progress(text: str) -> str:
    """ANSI escapes removed and every carriage-return redraw reduced to what the terminal shows at the end."""
    text = ANSI.sub("", text).replace("\r\n", "\n")
    lines = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r") if p]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


def _scrub_json(value, pairs):
    if isinstance(value, str):
        return scrub_paths(value, pairs)
    if isinstance(value, list):
        return [_scrub_json(v, pairs) for v in value]
    if isinstance(value, dict):
        return type(value)({k: _scrub_json(v, pairs) for k, v in value.items()})
    return value


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def output_text(out) -> str:
    """Every string of an output (stream text, every mime type but binary images, error and traceback), joined."""
    data = {k: v for k, v in (out.get("data") or {}).items() if k not in BINARY_MIMES}
    return "\n".join(_strings([data] + [out[k] for k in ("text", "evalue", "traceback") if k in out]))


def _merged_streams(outputs: list) -> list:
    """Consecutive stream outputs of the same stream joined into one (a progress bar redraws across messages)."""
    merged = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = _text(merged[-1]["text"]) + _text(out["text"])
        else:
            merged.append(out)
    return merged


def widget_text(state: dict, model_id: str | None) -> str | None:
    """The final state of a tqdm bar drawn as a widget (an HBox of description, progress and counts), as the text
    tqdm prints in a terminal, from the notebook's saved widget state; ``None`` when the state was not saved or the
    widget is not such a bar."""
    import html

    box = state.get(model_id or "", {})
    children = [state.get(str(c).removeprefix("IPY_MODEL_"), {}) for c in box.get("state", {}).get("children", [])]
    if box.get("model_name") != "HBoxModel" or [c.get("model_name") for c in children] != [
            "HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (c.get("state", {}) for c in children)
    value, top = bar.get("value") or 0, bar.get("max") or 0
    filled = round(10 * value / top) if top else 0
    text = f"{html.unescape(left.get('value', ''))}|{'█' * filled}{' ' * (10 - filled)}|{html.unescape(right.get('value', ''))}"
    return text.replace("\u2007", " ")


def clean(nb, root: Path | str = ROOT):
    """``nb`` (an nbformat notebook or its JSON dict; changed in place and returned) with outputs fit to commit:
    machine paths shortened (``.`` for the repository, ``<site-packages>``, ``~``, ``<tmp>``, ...), progress bars
    collapsed to their final state and ANSI escapes removed in streams, widget views dropped (a progress bar's
    text shows its final state, read from the saved widget state; a bar whose state was not saved is dropped, as its
    text would show it at 0%; other text fallbacks are kept), timing metadata dropped; images and HTML/plain tables
    are kept."""
    pairs = path_replacements(root)
    state = ((nb.get("metadata", {}).pop("widgets", None) or {}).get(WIDGET_STATE) or {}).get("state") or {}
    for cell in nb["cells"]:
        for key in TIMING_KEYS:
            cell.get("metadata", {}).pop(key, None)
        if cell["cell_type"] != "code":
            continue
        kept = []
        for out in _merged_streams(cell.get("outputs", [])):
            kind = out.get("output_type")
            if kind == "stream":
                out["text"] = scrub_paths(collapse_progress(_text(out["text"])), pairs)
                if not out["text"]:
                    continue
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                view = data.pop(WIDGET_MIME, None)
                if view is not None and "text/plain" in data:
                    final = widget_text(state, view.get("model_id"))
                    if final is not None:
                        data["text/plain"] = final
                    elif PROGRESS_TEXT.search(_text(data["text/plain"])):
                        continue   # a bar frozen at its first draw says nothing true
                if not data:
                    continue
                for mime in list(data):
                    if mime in BINARY_MIMES:
                        continue
                    textual = mime.startswith("text/") or mime.endswith(("+xml", "javascript"))
                    data[mime] = _scrub_json(_text(data[mime]) if textual else data[mime], pairs)
            elif kind == "error":
                out["evalue"] = scrub_paths(out.get("evalue", ""), pairs)
                out["traceback"] = [scrub_paths(t, pairs) for t in out.get("traceback", [])]
            kept.append(out)
        cell["outputs"] = kept
    return nb


# ---------------------------------------------------------------- stamp

def run_info(profile, seconds: float, cpu: str, matmul_gflops: dict | None, date: str) -> dict:
    """The label of one notebook's run, as :func:`stamp` records it."""
    return {"profile": profile.name, "precision": profile.precision, "date": date, "cpu": cpu,
            "matmul_gflops": matmul_gflops, "seconds": round(seconds, 1)}


def note(info: dict) -> str:
    """The Markdown note (between its markers) that says where the outputs shown come from."""
    rates = info.get("matmul_gflops") or {}
    order = sorted(rates, key=lambda k: (k != info.get("precision"), k))
    rate = ", ".join(f"{rates[k]:.0f} GFLOP/s {k}" for k in order)
    minutes = info["seconds"] / 60
    took = f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"
    text = (f"**Outputs shown** are from the reference run on the `{info['profile']}` profile "
            f"({info.get('precision', '?')}): {info['cpu']}" + (f", matmul {rate}" if rate else "")
            + f", {info['date']}, {took}. Running a cell replaces its output with yours.")
    return f"{NOTE_START}\n{text}\n{NOTE_END}"


def with_note(markdown: str, info: dict) -> str:
    """``markdown`` with its reference-run note rewritten where it is, or added at its end; nothing else changes."""
    start = markdown.find(NOTE_START)
    if start >= 0:
        end = markdown.index(NOTE_END, start) + len(NOTE_END)
        return markdown[:start] + note(info) + markdown[end:]
    return markdown.rstrip() + "\n\n" + note(info)


def stamp(nb, info: dict):
    """Record the run ``info`` (:func:`run_info`) in ``nb``'s metadata and in the note of its first cell, and the
    hash of each code cell's source in that cell's metadata. ``nb`` is changed in place and returned."""
    first = nb["cells"][0]
    if first["cell_type"] != "markdown":
        raise ValueError("the notebook's first cell is not Markdown: the reference-run note has nowhere to go")
    nb.setdefault("metadata", {})[META_KEY] = copy.deepcopy(dict(info))
    first["source"] = with_note(_text(first["source"]), info)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell.setdefault("metadata", {})[META_KEY] = {"source_sha256": source_hash(cell["source"])}
    return nb


# ---------------------------------------------------------------- check

def stale_cells(nb) -> list[tuple[int | None, str]]:
    """(cell index, reason) for every output that does not come from the current code: code cells edited since
    the reference run or never stamped, a first-cell note that is missing or disagrees with the metadata.
    (None, reason) when the notebook carries no reference run at all."""
    info = nb.get("metadata", {}).get(META_KEY)
    if not info:
        return [(None, "no reference run recorded (no outputs from `make run` on the `cpu` profile)")]
    stale = []
    if note(info) not in _text(nb["cells"][0]["source"]):
        stale.append((0, "the reference-run note in the first cell is missing or does not match the metadata"))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        recorded = cell.get("metadata", {}).get(META_KEY, {}).get("source_sha256")
        if recorded is None:
            stale.append((i, "not in the reference run (no source hash)"))
        elif recorded != source_hash(cell["source"]):
            stale.append((i, "edited since the reference run"))
    return stale


def describe(name: str, stale: list[tuple[int | None, str]]) -> str:
    lines = [f"{name}: " + ("whole notebook" if i is None else f"cell {i}") + f": {reason}" for i, reason in stale]
    return "\n".join(lines)


def _load(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def write(nb, path: Path) -> None:
    """Write ``nb`` as nbformat does (indent 1, UTF-8 kept, trailing newline), atomically."""
    import nbformat

    tmp = path.with_suffix(".ipynb.tmp")
    tmp.write_text(nbformat.writes(nbformat.from_dict(nb)) + "\n", encoding="utf-8")
    tmp.replace(path)


def reclean(nb, executed) -> int:
    """Replace the outputs of ``nb``'s code cells with :func:`clean`'s version of the same run's executed copy
    (``outputs/executed/``, which keeps what cleaning drops), cell by cell where the source is the same: for when
    the cleaning itself changed. Returns the number of cells changed; the run's label and hashes stay."""
    fresh = clean(copy.deepcopy(executed), ROOT)
    changed = 0
    for cell, new in zip(nb["cells"], fresh["cells"]):
        if cell["cell_type"] == "code" and _text(cell["source"]) == _text(new["source"]) \
                and cell.get("outputs") != new.get("outputs"):
            cell["outputs"], changed = new["outputs"], changed + 1
    return changed


FROZEN_BAR = re.compile(r"(?<!\d)0%\||(?<!\d)0it \[")


def drop_frozen_bars(nb) -> int:
    """Drop the outputs that are only a progress bar's first draw (text left by an older :func:`clean`, with no
    executed copy of that run to take the final state from); returns how many."""
    dropped = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        keep = [o for o in cell.get("outputs", []) if not (
            o.get("output_type") == "display_data" and set(o.get("data", {})) == {"text/plain"}
            and FROZEN_BAR.search(_text(o["data"]["text/plain"])))]
        dropped += len(cell.get("outputs", [])) - len(keep)
        cell["outputs"] = keep
    return dropped


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("check", "clean", "reclean"):
        print("usage: python scripts/reference_outputs.py check [notebook ...] | clean notebook ... | "
              "reclean [notebook ...]")
        return 2
    if argv[0] == "reclean":   # the committed outputs again from outputs/executed/, with today's clean()
        drop_bars, names = "--drop-bars" in argv, [a for a in argv[1:] if a != "--drop-bars"]
        for path in [Path(a) for a in names] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
            executed = ROOT / "outputs" / "executed" / path.name
            nb = _load(path)
            if drop_bars or not executed.is_file():   # no executed copy of the run these outputs come from
                n = drop_frozen_bars(nb)
                write(nb, path)
                print(f"{path.name}: {n} progress bar(s) shown at their first draw dropped (no executed copy used)")
                continue
            n = reclean(nb, _load(executed))
            write(nb, path)
            print(f"{path.name}: {n} cell(s) with outputs cleaned again from {executed.relative_to(ROOT)}")
        return 0
    if argv[0] == "clean":
        if len(argv) < 2:
            print("clean needs the notebook(s) to scrub, e.g. "
                  "`python scripts/reference_outputs.py clean notebooks/05_bitsandbytes_int8_nf4.ipynb`")
            return 2
        for name in argv[1:]:
            path = Path(name)
            write(clean(_load(path), ROOT), path)
            print(f"cleaned {name}")
        return 0
    paths = [Path(a) for a in argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    bad = []
    for path in paths:
        stale = stale_cells(_load(path))
        if stale:
            bad.append(path.name[:2])
            print(describe(path.name, stale))
        else:
            print(f"{path.name}: outputs from the reference run of the current code")
    if bad:
        print(f"\n{len(bad)} notebook(s) with stale outputs; refresh them with `make run` on the `cpu` profile, "
              f"or `python scripts/run_course.py {' '.join(bad)}`.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
