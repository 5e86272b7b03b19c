"""Data loading: the shipped skills JSONL files, validation, and normalisers for Hub datasets.

Every loader returns rows in TRL's *conversational* formats:

- SFT, prompt-completion: ``{"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}]}``
  (TRL then computes the loss on the completion tokens only);
- preference: ``{"prompt": [...], "chosen": [assistant message], "rejected": [assistant message]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from .paths import DATA_DIR
from .profiles import Profile

SKILL_COLUMNS = ("id", "skill", "prompt", "answer", "answers", "wrong", "case_sensitive")
SPLITS = ("sft_train", "dpo_train", "eval")
REGENERATE = "python -m helpers.skills"


class DataError(ValueError):
    """Bad or missing data; the message says which file, line or column, and what to do."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of dicts.

    Raises :class:`DataError` for a missing file, an empty file, a line that is not valid
    JSON (with its line number) and a line that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file not found: {path}. Regenerate the shipped data with `{REGENERATE}`.")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}).") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    if not rows:
        raise DataError(f"Data file {path} is empty. Regenerate it with `{REGENERATE}`.")
    return rows


def require_columns(rows: Sequence[dict], required: Iterable[str], name: str = "dataset") -> None:
    """Raise :class:`DataError` if ``rows`` is empty or its first row lacks any required column."""
    if not rows:
        raise DataError(f"The {name} is empty: there is nothing to train or evaluate on.")
    have = set(rows[0])
    missing = [c for c in required if c not in have]
    if missing:
        raise DataError(
            f"The {name} is missing column(s) {missing}; it has {sorted(have)}. "
            "Normalise it first (see helpers.data.normalize_sft_row / normalize_preference_row)."
        )


def load_skills(split: str, n: int | None = None, data_dir: str | Path | None = None) -> list[dict]:
    """Rows of one skills split (``sft_train``, ``dpo_train`` or ``eval``), validated.

    ``n`` keeps the first ``n`` rows; for ``eval`` rows are taken round-robin across skills so
    a small ``n`` still covers every skill.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown skills split '{split}'. Valid splits: {', '.join(SPLITS)}.")
    path = Path(data_dir or DATA_DIR) / f"skills_{split}.jsonl"
    rows = read_jsonl(path)
    require_columns(rows, SKILL_COLUMNS, name=f"skills split '{split}' ({path.name})")
    if n is not None and n < len(rows):
        if split == "eval":
            by_skill: dict[str, list[dict]] = {}
            for row in rows:
                by_skill.setdefault(row["skill"], []).append(row)
            queues = list(by_skill.values())
            picked: list[dict] = []
            i = 0
            while len(picked) < n:
                queue = queues[i % len(queues)]
                if queue:
                    picked.append(queue.pop(0))
                i += 1
            rows = picked
        else:
            rows = rows[:n]
    return rows


def user(content: str) -> list[dict[str, str]]:
    """A one-message user turn."""
    return [{"role": "user", "content": content}]


def assistant(content: str) -> list[dict[str, str]]:
    """A one-message assistant turn."""
    return [{"role": "assistant", "content": content}]


def skills_to_sft(row: dict) -> dict:
    """A skills row as a conversational prompt-completion example."""
    return {"prompt": user(row["prompt"]), "completion": assistant(row["answer"])}


def skills_to_preference(row: dict) -> dict:
    """A skills row as a conversational preference pair (chosen = correct, rejected = plausible wrong)."""
    return {"prompt": user(row["prompt"]), "chosen": assistant(row["answer"]), "rejected": assistant(row["wrong"])}


# ---------------------------------------------------------------------------------------------
# Normalisers for Hub datasets (used by the GPU profiles; tested on fixture rows shaped like them)
# ---------------------------------------------------------------------------------------------


def normalize_sft_row(row: dict) -> dict:
    """Turn a row of a common SFT schema into a conversational prompt-completion example.

    Accepted schemas:
    - chat: ``{"messages": [...]}`` (smoltalk, UltraChat): the last assistant turn is the completion;
    - Alpaca: ``{"instruction", "input"?, "output"}``;
    - plain: ``{"prompt": str, "completion": str}`` or ``{"question", "answer"}``;
    - already conversational ``{"prompt": [...], "completion": [...]}``.
    """
    if "messages" in row:
        messages = list(row["messages"])
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            raise DataError("A 'messages' row needs a user turn followed by an assistant turn.")
        return {"prompt": messages[:last], "completion": [messages[last]]}
    if "instruction" in row and "output" in row:
        text = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return {"prompt": user(text), "completion": assistant(row["output"])}
    for p, c in (("prompt", "completion"), ("question", "answer")):
        if p in row and c in row:
            prompt, completion = row[p], row[c]
            return {
                "prompt": user(prompt) if isinstance(prompt, str) else list(prompt),
                "completion": assistant(completion) if isinstance(completion, str) else list(completion),
            }
    raise DataError(
        f"Unrecognised SFT row with columns {sorted(row)}; expected 'messages', "
        "'instruction'+'output', 'prompt'+'completion' or 'question'+'answer'."
    )


def sft_rows(profile: Profile) -> list[dict]:
    """Training rows for supervised fine-tuning on the profile, in prompt-completion form."""
    rows = load_skills("sft_train", profile.n_train)
    return [skills_to_sft(r) for r in rows]


def eval_rows(profile: Profile) -> list[dict]:
    """The held-out skills evaluation rows the profile evaluates on."""
    return load_skills("eval", profile.n_eval)


def as_dataset(rows: list[dict]):
    """Wrap rows in a ``datasets.Dataset`` (the type the TRL trainers take)."""
    from datasets import Dataset

    if not rows:
        raise DataError("Cannot build a dataset from zero rows.")
    return Dataset.from_list(rows)
