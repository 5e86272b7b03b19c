"""Real datasets from the Hugging Face Hub: UltraFeedback, HH-RLHF and UltraChat, read with ``datasets.load_dataset``.

The GPU profiles name a Hub dataset in ``sft_dataset`` / ``preference_dataset``. This module knows their split
names and columns and streams the number of rows a profile asks for (a shuffled sample, so nobody downloads
gigabytes); :mod:`helpers.data` normalises them to TRL's conversational form and reports every row it cannot use. The call is the same with or without the Hub:

    load_dataset("HuggingFaceH4/ultrafeedback_binarized", split="train_prefs", streaming=True)   # Colab
    load_dataset("data/hub_fixtures/HuggingFaceH4/ultrafeedback_binarized", split="train_prefs", streaming=True)

The second line is what runs offline: ``profile.hub_data`` (or ``COURSE_HUB_DATA``) names a folder that holds a copy
of each dataset under its Hub id. The course ships small copies in each dataset's
exact Hub schema and split names (``data/hub_fixtures``, written by :mod:`helpers.hub_fixtures`, used by the ``tiny`` profile and the tests); a folder saved
with ``huggingface-cli download --repo-type dataset ID --local-dir DIR/ID`` works the same way.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .paths import DATA_DIR

FIXTURES_DIR = DATA_DIR / "hub_fixtures"
HUB_DATA_ENV = "COURSE_HUB_DATA"
SHUFFLE_BUFFER = 2_000   # rows held by the streaming shuffle: the sample is drawn from the first shards' rows
_READ: dict[tuple, list[dict]] = {}


@dataclass(frozen=True)
class HubDataset:
    """What the course needs to know about one Hub dataset: its kind, split names and columns."""

    kind: str                 # "sft" or "preference"
    train: str                # split names, exactly as on the Hub
    test: str
    splits: tuple[str, ...]
    columns: tuple[str, ...]  # the columns of every split, as on the Hub
    about: str


DATASETS: dict[str, HubDataset] = {
    "HuggingFaceH4/ultrafeedback_binarized": HubDataset(
        "preference", "train_prefs", "test_prefs",
        ("train_prefs", "train_sft", "test_prefs", "test_sft", "train_gen", "test_gen"),
        ("prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"),
        "64k prompts, four model answers each rated by GPT-4; chosen = the best rated, rejected = one of the others "
        "(Cui et al. 2023; binarized for Zephyr, Tunstall et al. 2023)"),
    "Anthropic/hh-rlhf": HubDataset(
        "preference", "train", "test", ("train", "test"), ("chosen", "rejected"),
        "161k human-rated dialogues about helpfulness and harmlessness, as 'Human: ... Assistant: ...' transcripts "
        "(Bai et al. 2022)"),
    "HuggingFaceH4/ultrachat_200k": HubDataset(
        "sft", "train_sft", "test_sft", ("train_sft", "test_sft", "train_gen", "test_gen"),
        ("prompt", "prompt_id", "messages"),
        "200k multi-turn chats between two ChatGPT instances, filtered (Ding et al. 2023; Zephyr's SFT set)"),
}


def spec(dataset_id: str) -> HubDataset:
    """The :class:`HubDataset` of ``dataset_id``; an unknown id is refused with the known ones."""
    if dataset_id not in DATASETS:
        raise DataError(f"The course does not know the dataset {dataset_id!r}: it knows {sorted(DATASETS)}. For "
                        "another dataset, load it yourself (datasets.load_dataset) and pass its rows through "
                        "data.usable_rows with data.normalize_sft_row or data.normalize_preference_row.")
    return DATASETS[dataset_id]


def source(dataset_id: str, hub_data: str | None = None) -> str:
    """What ``load_dataset`` is given: the Hub id, or its copy under the local folder ``hub_data``
    (``"fixtures"``: the course's own copies) or ``COURSE_HUB_DATA``."""
    folder = os.environ.get(HUB_DATA_ENV, "").strip() or hub_data
    if not folder:
        return dataset_id
    root = FIXTURES_DIR if folder == "fixtures" else Path(folder).expanduser()
    local = root / dataset_id
    if not local.is_dir():
        raise DataError(f"No local copy of {dataset_id} in {root} (from {HUB_DATA_ENV} or the profile's hub_data): "
                        f"expected the folder {local}. Download it there (huggingface-cli download --repo-type dataset "
                        f"{dataset_id} --local-dir {local}), or leave {HUB_DATA_ENV} and hub_data unset to read the Hub.")
    return str(local)


def card_splits(local: Path) -> dict[str, list[str]] | None:
    """The data files a local copy's dataset card (``README.md``) declares for each split of its first config
    (``{"test_prefs": ["data/test_prefs-*"], ...}``), or ``None`` when the card declares none."""
    import yaml

    card = local / "README.md"
    text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else ""
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError):
        return None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    files = configs[0].get("data_files") if isinstance(configs, list) and configs and isinstance(configs[0], dict) else None
    if not isinstance(files, list):
        return None
    declared = {}
    for entry in files:
        if isinstance(entry, dict) and isinstance(entry.get("split"), str):
            path = entry.get("path")
            declared[entry["split"]] = [path] if isinstance(path, str) else [p for p in path or [] if isinstance(p, str)]
    return declared or None


def local_copy_problem(local: Path, split: str) -> str | None:
    """What a local copy lacks for ``load_dataset`` to read ``split`` (``None`` when nothing): a split its card
    declares with no file matching (``datasets`` then refuses every split of the copy, with a message about data-file
    formats), or, for a copy without a card, no data file for ``split``."""
    declared = card_splits(local)
    if declared is not None:
        missing = [name for name, patterns in declared.items() if not any(any(local.glob(p)) for p in patterns)]
        if missing:
            return (f"no file in {local} matches what its README.md declares for the split(s) {missing} "
                    f"({', '.join(p for name in missing for p in declared[name])})")
        if split not in declared:
            return f"its README.md declares the splits {list(declared)}, not {split!r}"
        return None
    from datasets.data_files import get_data_patterns

    try:
        found = get_data_patterns(str(local))
    except Exception:   # no data files at all, among others: load_dataset says which
        return None
    return None if split in found else f"{local} holds no data files for the split {split!r} (it has {sorted(found)})"


def stream_rows(dataset_id: str, split: str, n: int, hub_data: str | None = None, seed: int = 0) -> list[dict]:
    """``n`` raw rows of one split, streamed and shuffled (buffer :data:`SHUFFLE_BUFFER`), with a progress bar."""
    from datasets import load_dataset
    from tqdm.auto import tqdm

    info = spec(dataset_id)
    if split not in info.splits:
        raise DataError(f"{dataset_id} has no split {split!r}; its splits are {list(info.splits)}. Use one of those "
                        f"(the course trains on {info.train!r} and tests on {info.test!r}).")
    where = source(dataset_id, hub_data)
    if where != dataset_id and (problem := local_copy_problem(Path(where), split)):   # before datasets reads it
        raise DataError(f"The local copy of {dataset_id} is incomplete: {problem}. Download the missing files there "
                        f"again (huggingface-cli download --repo-type dataset {dataset_id} --local-dir {where}), or "
                        f"set {HUB_DATA_ENV} to a complete copy.")
    key = (where, split, n, seed)
    if key in _READ:   # read once per process: a profile's rows are asked for by several helpers
        return copy.deepcopy(_READ[key])
    try:
        stream = load_dataset(where, split=split, streaming=True).shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
        rows = [dict(r) for r in tqdm(stream.take(n), total=n, desc=f"{dataset_id} [{split}]", leave=False)]
    except (OSError, ValueError) as exc:   # connection errors and missing files are OSErrors
        raise DataError(f"Could not read {dataset_id} ({split}) from {where}: {type(exc).__name__}: {exc}. Offline, "
                        f"set {HUB_DATA_ENV} to a folder holding a copy under {dataset_id}, or train on the course's "
                        "data: COURSE_SFT_DATASET=skills, COURSE_PREFERENCE_DATASET=skills.") from exc
    missing = [c for c in info.columns if rows and c not in rows[0]]
    if missing:
        raise DataError(f"{where} [{split}] lacks the columns {missing} of {dataset_id}; it has {sorted(rows[0])}. "
                        "Use a copy in the Hub's schema (download it again), or load your rows yourself and pass them "
                        "through data.usable_rows with data.normalize_sft_row or data.normalize_preference_row.")
    _READ[key] = rows
    return copy.deepcopy(rows)


KEPT: dict[str, dict] = {}  # per dataset and split: what first_exchanges kept (rows, turns, the kept share)


def first_exchanges(rows: list[dict], name: str = "chat rows", verbose: bool = True) -> list[dict]:
    """Each chat row (``messages``) cut after its first assistant turn: system message, first user turn, first
    answer. UltraChat's conversations run to several exchanges; taken whole, everything before the last answer
    becomes the prompt and most rows no longer fit a 512-token ``max_length``, so the length filter would leave most
    of them out. The first exchange is a complete, self-contained example. Rows without ``messages`` pass unchanged.

    Says (``verbose``) and records in :data:`KEPT[name] <KEPT>` how many rows were cut and the share of assistant
    turns kept; the length filter (:func:`helpers.data.within_length`) then reports what still does not fit."""
    out, cut, turns, kept_turns = [], 0, 0, 0
    for row in rows:
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list):
            out.append(row)
            continue
        first = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), None)
        answers = sum(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
        turns += answers
        if first is None or first == len(messages) - 1:
            kept_turns += answers
            out.append(row)
            continue
        cut += 1
        kept_turns += 1
        out.append({**row, "messages": messages[: first + 1]})
    share = kept_turns / turns if turns else 1.0
    KEPT[name] = {"rows": len(rows), "rows_cut": cut, "assistant_turns": turns, "turns_kept": kept_turns,
                  "turns_kept_share": share}
    if verbose and cut:
        print(f"{name}: kept the first exchange of each conversation; {cut} of {len(rows)} rows had more "
              f"(kept {kept_turns} of {turns} assistant turns, {share:.0%}).")
    return out
