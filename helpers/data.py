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
from .profiles import Profile, takes_profile

SKILL_COLUMNS = ("id", "skill", "prompt", "answer", "answers", "wrong", "case_sensitive")
SPLITS = ("sft_train", "dpo_train", "eval")
REGENERATE = "python -m helpers.skills"


class DataError(ValueError):
    """Bad or missing data; the message says which file, line or column, and what to do."""


def read_jsonl(path: str | Path, line_numbers: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of dicts (with ``line_numbers``: also each row's line number).

    Raises :class:`DataError` for a missing file, an empty file, a line that is not UTF-8 or not valid
    JSON (with its line number) and a line that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file not found: {path}. Regenerate the shipped data with `{REGENERATE}`.")
    rows, lines = [], []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                                f"{exc.start + 1}). Save the file as UTF-8.") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}). "
                                "Each line must hold one JSON object.") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}. "
                                "Each line must hold one JSON object such as {\"prompt\": ..., ...}.")
            rows.append(row)
            lines.append(lineno)
    if not rows:
        raise DataError(f"Data file {path} is empty. Regenerate it with `{REGENERATE}`.")
    return (rows, lines) if line_numbers else rows


# ---------------------------------------------------------------------------------------------
# Validation: every row, every column, with the row (or line) and what to do
# ---------------------------------------------------------------------------------------------

ROLES = ("system", "user", "assistant")
SHOWN_PROBLEMS = 5  # an error lists this many bad rows, then counts the rest


def require_sequence(value: Any, what: str, example: str) -> list:
    """``value`` as a list; a string, a dict or a non-sequence is refused (a string where a list belongs would
    be read one character at a time)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what} must be a list, not a single string ({str(value)[:40]!r}): a string would be read "
                        f"one character at a time. Wrap it in a list: {example}.")
    if isinstance(value, dict) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        raise TypeError(f"{what} must be a list, got {type(value).__name__}. Example: {example}.")
    return list(value)


def message_problem(value: Any, column: str, roles: Sequence[str] = ROLES) -> str | None:
    """Why ``value`` is not a usable list of chat messages for ``column`` (``None`` when it is)."""
    if isinstance(value, str):
        return (f"'{column}' is a string, where a list of messages belongs; build it with "
                f"data.user(text) or data.assistant(text), or normalise the row (data.normalize_sft_row)")
    if not isinstance(value, list) or not value:
        return f"'{column}' must be a non-empty list of {{'role', 'content'}} messages, got {_describe(value)}"
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"'{column}'[{j}] is not a {{'role': ..., 'content': ...}} message (got {_describe(m)})"
        if m["role"] not in roles:
            return f"'{column}'[{j}] has role {m['role']!r}; here it must be one of {list(roles)}"
        if not isinstance(m["content"], str):
            return f"'{column}'[{j}]['content'] must be text, got {_describe(m['content'])}"
        if not m["content"].strip():
            return f"'{column}'[{j}] has empty content"
    return None


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + ('...' if len(text) > 40 else '')}"


def check_rows(rows: Any, columns: dict[str, Any], name: str, fix: str, lines: Sequence[int] | None = None) -> list[dict]:
    """Validate every row: each column in ``columns`` present and passing its check (a function returning a
    problem or ``None``). Raises one :class:`DataError` that lists the bad rows (or file lines), what is wrong
    with each, and ``fix``; returns the rows as a list."""
    rows = require_sequence(rows, name, '[{"prompt": ..., ...}, ...]')
    if not rows:
        raise DataError(f"The {name} is empty: there is nothing to train or evaluate on.")
    problems = []
    for i, row in enumerate(rows):
        where = f"line {lines[i]}" if lines else f"row {i}"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a dict of columns, got {_describe(row)}")
            continue
        missing = [c for c in columns if c not in row]
        if missing:
            problems.append(f"{where}: missing column(s) {missing}; it has {sorted(row)}")
            continue
        for column, check in columns.items():
            problem = check(row[column], column) if check else None
            if problem:
                problems.append(f"{where}: {problem}")
                break
    if problems:
        raise DataError(f"The {name}: {len(problems)} of {len(rows)} rows are unusable:{_listing(problems)}\n{fix}")
    return rows


def _listing(problems: Sequence[str]) -> str:
    """The first :data:`SHOWN_PROBLEMS` problems, one per line, and how many more there are."""
    shown = "".join(f"\n  {p}" for p in problems[:SHOWN_PROBLEMS])
    return shown + (f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else "")


def _messages(roles: Sequence[str]):
    return lambda value, column: message_problem(value, column, roles)


def _text(value: Any, column: str) -> str | None:
    if not isinstance(value, str):
        return f"'{column}' must be text, got {_describe(value)}"
    return None if value.strip() else f"'{column}' is empty"


def _answers(value: Any, column: str) -> str | None:
    if isinstance(value, str):
        return (f"'{column}' is the string {value!r}, where a list of accepted answers belongs (a string would be "
                f"scored one character at a time); write [{value!r}]")
    if not isinstance(value, list) or not value:
        return f"'{column}' must be a non-empty list of accepted answers, got {_describe(value)}"
    bad = [a for a in value if not isinstance(a, str) or not a.strip()]
    return f"'{column}' holds {_describe(bad[0])}, not a non-empty answer" if bad else None


def _bool(value: Any, column: str) -> str | None:
    return None if isinstance(value, bool) else f"'{column}' must be true or false, got {_describe(value)}"


PROMPT_CHECK = _messages(("system", "user", "assistant"))
SFT_CHECKS = {"prompt": PROMPT_CHECK, "completion": _messages(("assistant",))}
PREFERENCE_CHECKS = {"prompt": PROMPT_CHECK, "chosen": _messages(("assistant",)), "rejected": _messages(("assistant",))}
SKILL_CHECKS = {"id": _text, "skill": _text, "prompt": _text, "answer": _text, "answers": _answers, "wrong": _text,
                "case_sensitive": _bool}
def _prompt(value: Any, column: str) -> str | None:
    """A prompt for generation: one user message as text, or a list of chat messages."""
    return _text(value, column) if isinstance(value, str) else message_problem(value, column)


EVAL_CHECKS = {"prompt": _prompt, "answers": _answers, "skill": _text}
CONVERSATIONAL_FIX = ("Each row needs 'prompt' (user messages) and {answers} (assistant messages); "
                      "data.normalize_sft_row / dpo.normalize_preference_row turn common Hub schemas into this form.")


def check_sft_rows(rows: Any, name: str = "SFT training data") -> list[dict]:
    """Validate conversational prompt-completion rows (every row); see :func:`check_rows`."""
    return check_rows(rows, SFT_CHECKS, name, CONVERSATIONAL_FIX.format(answers="'completion'"))


def check_preference_rows(rows: Any, name: str = "preference data") -> list[dict]:
    """Validate conversational preference rows (every row); see :func:`check_rows`."""
    return check_rows(rows, PREFERENCE_CHECKS, name, CONVERSATIONAL_FIX.format(answers="'chosen' and 'rejected'"))


def check_skill_rows(rows: Any, name: str = "skills evaluation rows", lines: Sequence[int] | None = None) -> list[dict]:
    """Validate skills rows (every row): text fields non-empty, ``answers`` a list, ``case_sensitive`` a bool."""
    return check_rows(rows, SKILL_CHECKS, name, f"Fix those rows, or regenerate the shipped data with `{REGENERATE}`.",
                      lines)


def check_eval_rows(rows: Any, name: str = "evaluation rows") -> list[dict]:
    """Validate rows to score (every row): ``prompt`` (text or messages), ``answers`` (a list), ``skill``."""
    return check_rows(rows, EVAL_CHECKS, name, "Evaluation rows need 'prompt', 'answers' (a list of accepted "
                      "answers) and 'skill'; data.eval_rows(profile) gives the course's held-out set.")


def require_columns(rows: Sequence[dict], required: Iterable[str], name: str = "dataset") -> None:
    """Raise :class:`DataError` if ``rows`` is empty or any row lacks a required column (naming the row)."""
    check_rows(rows, dict.fromkeys(required), name,
               "Normalise it first (see helpers.data.normalize_sft_row / dpo.normalize_preference_row).")


def within_length(tokenizer, rows: Sequence[dict], max_length: int, name: str = "SFT training data",
                  answers: Sequence[str] = ("completion",)) -> list[dict]:
    """The rows whose prompt and every answer column (``completion``; or ``chosen`` and ``rejected``) fit in
    ``max_length`` tokens after the chat template. Says how many were longer (the trainer would cut their answers
    off, or away) and refuses when none fits."""
    rows = check_sft_rows(rows, name) if tuple(answers) == ("completion",) else check_preference_rows(rows, name)

    def n_tokens(messages):
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

    lengths = [max(n_tokens(r["prompt"] + r[a]) for a in answers) for r in rows]
    kept = [r for r, n in zip(rows, lengths) if n <= max_length]
    if not kept:
        prompt = len(tokenizer.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=True,
                                                   return_dict=False))
        raise DataError(f"The {name}: all {len(rows)} rows are longer than max_length={max_length} tokens (row 0: "
                        f"{lengths[0]} tokens, of which the prompt alone is {prompt} tokens). Raise max_length (the "
                        "profile field, or the trainer config's argument) or shorten the rows.")
    if len(kept) < len(rows):
        print(f"{name}: {len(rows) - len(kept)} of {len(rows)} rows are longer than max_length={max_length} tokens "
              f"(longest {max(lengths)}) and are left out; raise max_length to keep them.")
    else:
        print(f"{name}: all {len(rows)} rows fit in max_length={max_length} tokens (longest {max(lengths)}).")
    return kept


def load_skills(split: str, n: int | None = None, data_dir: str | Path | None = None) -> list[dict]:
    """Rows of one skills split (``sft_train``, ``dpo_train`` or ``eval``), validated.

    ``n`` keeps the first ``n`` rows; for ``eval`` rows are taken round-robin across skills so
    a small ``n`` still covers every skill.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown skills split '{split}'. Valid splits: {', '.join(SPLITS)}.")
    path = Path(data_dir or DATA_DIR) / f"skills_{split}.jsonl"
    rows, lines = read_jsonl(path, line_numbers=True)
    check_skill_rows(rows, f"skills split '{split}' ({path})", lines)
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

    A row that breaks its schema's rules raises :class:`DataError` naming the rule; the result is checked like
    any training row (:func:`check_sft_rows`).
    """
    if not isinstance(row, dict):
        raise DataError(f"An SFT row must be a dict of columns, got {_describe(row)}.")
    if "messages" in row:
        messages = row["messages"]
        problem = message_problem(messages, "messages")
        if problem:
            raise DataError(f"Chat row: {problem}.")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or not any(m["role"] == "user" for m in messages[:last]):
            raise DataError("A 'messages' row needs a user turn followed by an assistant turn.")
        result = {"prompt": list(messages[:last]), "completion": [messages[last]]}
    elif "instruction" in row and "output" in row:
        for column in ("instruction", "output"):
            if problem := _text(row[column], column):
                raise DataError(f"Alpaca row: {problem}.")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise DataError(f"Alpaca row: 'input' must be text or absent, got {_describe(extra)}.")
        text = row["instruction"] + (f"\n\n{extra}" if extra else "")
        result = {"prompt": user(text), "completion": assistant(row["output"])}
    else:
        for p, c in (("prompt", "completion"), ("question", "answer")):
            if p in row and c in row:
                prompt, completion = row[p], row[c]
                result = {
                    "prompt": user(prompt) if isinstance(prompt, str) else prompt,
                    "completion": assistant(completion) if isinstance(completion, str) else completion,
                }
                break
        else:
            raise DataError(
                f"Unrecognised SFT row with columns {sorted(row)}; expected 'messages', "
                "'instruction'+'output', 'prompt'+'completion' or 'question'+'answer'."
            )
    for column, check in SFT_CHECKS.items():
        if problem := check(result[column], column):
            raise DataError(f"SFT row: {problem}.")
    return result


def normalize_rows(rows: Any, normalize, name: str) -> list[dict]:
    """Apply ``normalize`` to every row; one :class:`DataError` lists each row it refused (index and rule)."""
    rows = require_sequence(rows, name, "[row, row, ...]")
    out, problems = [], []
    for i, row in enumerate(rows):
        try:
            out.append(normalize(row))
        except DataError as exc:
            problems.append(f"row {i}: {exc}")
    if problems:
        raise DataError(f"The {name}: {len(problems)} of {len(rows)} rows break their schema:{_listing(problems)}\n"
                        "Fix or drop those rows before training.")
    if not out:
        raise DataError(f"The {name} is empty: there is nothing to train on.")
    return out


@takes_profile
def sft_rows(profile: Profile) -> list[dict]:
    """Training rows for supervised fine-tuning on the profile, in prompt-completion form."""
    rows = load_skills("sft_train", profile.n_train)
    return [skills_to_sft(r) for r in rows]


@takes_profile
def eval_rows(profile: Profile) -> list[dict]:
    """The held-out skills evaluation rows the profile evaluates on."""
    return load_skills("eval", profile.n_eval)


def as_dataset(rows: list[dict]):
    """Wrap rows in a ``datasets.Dataset`` (the type the TRL trainers take)."""
    from datasets import Dataset

    rows = require_sequence(rows, "as_dataset(rows)", "[{...}, {...}]")
    if not rows:
        raise DataError("Cannot build a dataset from zero rows.")
    return Dataset.from_list(rows)
