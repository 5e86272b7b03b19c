"""Data loading: the shipped skills JSONL files, validation, and normalisers for Hub datasets.

Every loader returns rows in TRL's *conversational* formats:

- SFT, prompt-completion: ``{"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}]}``
  (TRL then computes the loss on the completion tokens only);
- preference: ``{"prompt": [...], "chosen": [assistant message], "rejected": [assistant message]}``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import DataError, RowError
from .hub_data import first_exchanges, spec, stream_rows
from .paths import DATA_DIR
from .profiles import Profile, takes_profile

SKILL_COLUMNS = ("id", "skill", "prompt", "answer", "answers", "wrong", "case_sensitive")
SPLITS = ("sft_train", "dpo_train", "eval")
REGENERATE = "python -m helpers.skills"


def _encoding_hint(raw: bytes) -> str:
    """What a file that is not UTF-8 seems to be instead (UTF-16 and UTF-32 have a byte-order mark or zero
    bytes between ASCII letters), in brackets, to follow "Save the file as UTF-8"."""
    head = raw[:4096]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head.count(b"\x00") > len(head) // 4:
        return (" (it looks like UTF-16 or UTF-32, which some editors and Excel's 'Unicode text' write; in Python: "
                "path.write_text(path.read_text('utf-16'), 'utf-8'))")
    return " (it may be Latin-1 or Windows-1252 now)"


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
                                f"{exc.start + 1}). Save the file as UTF-8{_encoding_hint(path.read_bytes())}.") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}). "
                                "Fix that line so that it holds one JSON object (check its quotes, commas and "
                                "brackets), or regenerate the shipped data with `" + REGENERATE + "`.") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}. "
                                "Write each line as one JSON object such as {\"prompt\": ..., ...}.")
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
        raise DataError(f"The {name} is empty: there is nothing to train or evaluate on. Give at least one row.")
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
CONVERSATIONAL_FIX = ("Each row needs {columns}: add what is missing to every row, or let data.normalize_sft_row / "
                      "data.normalize_preference_row turn common Hub schemas (and data.load_own your own file) into "
                      "this form.")   # one remedy, in the same words, for the SFT and the DPO paths


def check_sft_rows(rows: Any, name: str = "SFT training data") -> list[dict]:
    """Validate conversational prompt-completion rows (every row); see :func:`check_rows`."""
    return check_rows(rows, SFT_CHECKS, name, CONVERSATIONAL_FIX.format(
        columns="'prompt' (user messages) and 'completion' (assistant messages)"))


def check_preference_rows(rows: Any, name: str = "preference data") -> list[dict]:
    """Validate conversational preference rows (every row); see :func:`check_rows`."""
    return check_rows(rows, PREFERENCE_CHECKS, name, CONVERSATIONAL_FIX.format(
        columns="'prompt' (user messages) and 'chosen' and 'rejected' (assistant messages)"))


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
    required = list(required)
    check_rows(rows, dict.fromkeys(required), name,
               CONVERSATIONAL_FIX.format(columns=" and ".join(f"'{c}'" for c in required)))


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
        raise DataError(f"Unknown skills split '{split}'. Valid splits: {', '.join(SPLITS)}; use one of them.")
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

# What to do about a refused row (RowError.fix), where several rules share the answer
ONE_OBJECT = "each row must be one object of columns (a JSON object per line, or one CSV row)"
MAP_SFT = "map your columns to the course's: columns={'prompt': ..., 'completion': ...}, or give 'messages'"
MAP_PREFERENCE = "map your columns to the course's: columns={'prompt': ..., 'chosen': ..., 'rejected': ...}"
SAME_CONVERSATION = "drop the row: only two answers to the same conversation can be compared"
FILL_PAIR = "give the prompt as text or user messages, and 'chosen' and 'rejected' as non-empty answers"


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
        raise RowError(f"An SFT row must be a dict of columns, got {_describe(row)}.", fix=ONE_OBJECT)
    if "messages" in row:
        messages = row["messages"]
        problem = message_problem(messages, "messages")
        if problem:
            raise RowError(f"Chat row: {problem}.",
                           fix="give 'messages' as a list of {'role', 'content'} messages, each with text")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or not any(m["role"] == "user" for m in messages[:last]):
            raise RowError("A 'messages' row needs a user turn followed by an assistant turn.",
                           fix='end the conversation with an assistant turn after a user turn, or drop the row')
        result = {"prompt": list(messages[:last]), "completion": [messages[last]]}
    elif "instruction" in row and "output" in row:
        for column in ("instruction", "output"):
            if problem := _text(row[column], column):
                raise RowError(f"Alpaca row: {problem}.",
                               fix="fill 'instruction' and 'output' with text, or drop the row")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise RowError(f"Alpaca row: 'input' must be text or absent, got {_describe(extra)}.",
                           fix="make 'input' text, or leave it out")
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
            raise RowError(
                f"Unrecognised SFT row with columns {sorted(row)}; expected 'messages', "
                "'instruction'+'output', 'prompt'+'completion' or 'question'+'answer'."
            , fix=MAP_SFT)
    for column, check in SFT_CHECKS.items():
        if problem := check(result[column], column):
            raise RowError(f"SFT row: {problem}.",
                           fix='give the prompt as text (or user messages) and the answer as text (or one assistant message)')
    return result


def normalize_rows(rows: Any, normalize, name: str) -> list[dict]:
    """Apply ``normalize`` to every row; one :class:`DataError` lists each row it refused (index and rule)."""
    rows = require_sequence(rows, name, "[row, row, ...]")
    out, refused = row_problems(rows, normalize)
    problems = [f"row {p['row']}: {p['rule']}  ->  {p['fix']}" for p in refused]
    if problems:
        raise DataError(f"The {name}: {len(problems)} of {len(rows)} rows break their schema:{_listing(problems)}\n"
                        "Fix or drop those rows before training.")
    if not out:
        raise DataError(f"The {name} is empty: there is nothing to train on. Give at least one row.")
    return out


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _hh_messages(text: str) -> list[dict]:
    parts = _HH_TURN.split("\n\n" + text.strip() if not text.startswith("\n\n") else text)
    messages = []
    for role, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return messages


def normalize_preference_row(row: dict) -> dict:
    """Turn a Hub preference row into ``{"prompt": [...], "chosen": [assistant], "rejected": [assistant]}``.

    Accepted schemas:
    - UltraFeedback-binarized style: ``prompt`` (str) and ``chosen``/``rejected`` as full message lists
      ending with the assistant answer (the turns before it must be the same in both);
    - HH-RLHF style: ``chosen``/``rejected`` strings ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` sharing the
      conversation up to the last assistant turn;
    - already conversational rows (lists for prompt, chosen and rejected) pass through.

    A row that breaks its schema's rules raises :class:`DataError` naming the rule (use
    :func:`normalize_preference_rows` for a whole dataset: it names the row too).
    """
    if not isinstance(row, dict):
        raise RowError(f"A preference row must be a dict of columns, got {type(row).__name__}.", fix=ONE_OBJECT)
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if chosen is None or rejected is None:
        raise RowError(f"Preference row needs 'chosen' and 'rejected'; it has {sorted(row)}.", fix=MAP_PREFERENCE)
    if isinstance(chosen, str) and isinstance(rejected, str) and "\n\nAssistant:" in chosen:
        c_msgs, r_msgs = _hh_messages(chosen), _hh_messages(rejected)
        if not c_msgs or c_msgs[-1]["role"] != "assistant" or not r_msgs or r_msgs[-1]["role"] != "assistant":
            raise RowError("HH-RLHF row: each of chosen/rejected must end with an 'Assistant:' turn.",
                           fix='drop the row: it is not a finished conversation')
        if not any(m["role"] == "user" for m in c_msgs[:-1]):
            raise RowError("HH-RLHF row: no 'Human:' turn before the last 'Assistant:' turn, so there is no prompt.",
                           fix='drop the row: there is no question for the answers')
        if c_msgs[:-1] != r_msgs[:-1]:
            raise RowError("HH-RLHF row: chosen and rejected differ before their last 'Assistant:' turn, so they "
                            "answer different conversations; such a pair cannot be compared.", fix=SAME_CONVERSATION)
        result = {"prompt": c_msgs[:-1], "chosen": [c_msgs[-1]], "rejected": [r_msgs[-1]]}
    elif isinstance(chosen, list) and isinstance(rejected, list):
        for column, value in (("chosen", chosen), ("rejected", rejected)):
            if problem := message_problem(value, column):
                raise RowError(f"Preference row: {problem}.",
                               fix="give 'chosen' and 'rejected' as text, or as lists of {'role', 'content'} messages")
            if value[-1]["role"] != "assistant":
                raise RowError(f"Preference row: '{column}' must end with an assistant message, "
                                f"not a {value[-1]['role']!r} one.",
                                fix="end each answer with the assistant's message, or drop the row")
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            context = prompt
        else:
            if chosen[:-1] != rejected[:-1]:
                raise RowError("Preference row: chosen and rejected differ before their last assistant message, so "
                                "they answer different conversations; such a pair cannot be compared.",
                                fix=SAME_CONVERSATION)
            context = chosen[:-1] or (user(prompt) if isinstance(prompt, str) and prompt.strip() else [])
            if not context:
                raise RowError("Preference row has no prompt: give 'prompt' or a user turn before the answer.",
                               fix="map a prompt column (columns={'prompt': ...}), or start the answers with a user turn")
        result = {"prompt": context, "chosen": chosen[-1:], "rejected": rejected[-1:]}
    elif isinstance(row.get("prompt"), str) and isinstance(chosen, str) and isinstance(rejected, str):
        result = {"prompt": user(row["prompt"]), "chosen": assistant(chosen), "rejected": assistant(rejected)}
    else:
        raise RowError(f"Unrecognised preference row with columns {sorted(row)} (UltraFeedback or HH-RLHF expected): "
                        f"'chosen' is {type(chosen).__name__} and 'rejected' {type(rejected).__name__}.",
                        fix=MAP_PREFERENCE)
    for column, check in PREFERENCE_CHECKS.items():
        if problem := check(result[column], column):
            raise RowError(f"Preference row: {problem}.", fix=FILL_PAIR)
    return result


def normalize_preference_rows(rows, name: str = "preference dataset") -> list[dict]:
    """:func:`normalize_preference_row` on every row; one error lists each refused row with its index and rule."""
    return normalize_rows(rows, normalize_preference_row, name)


# ---------------------------------------------------------------------------------------------
# Rows that cannot be used: reported (row, rule, fix) and left out; nothing usable is an error
# ---------------------------------------------------------------------------------------------


def row_problems(rows: Sequence[Any], normalize, lines: Sequence[int] | None = None) -> tuple[list[dict], list[dict]]:
    """``normalize`` applied to every row: the rows it accepted, and one ``{"row", "rule", "fix"}`` per row it
    refused (``row`` is the file line when ``lines`` is given, else the 0-based index)."""
    kept, problems = [], []
    for i, row in enumerate(rows):
        where = f"line {lines[i]}" if lines else i
        try:
            kept.append(normalize(row))
        except DataError as exc:   # a RowError carries its rule and fix; another DataError is its own rule
            problems.append({"row": where, "rule": getattr(exc, "rule", str(exc)),
                             "fix": getattr(exc, "fix", "fix or drop the row")})
    return kept, problems


def usable_rows(rows: Any, normalize, name: str, lines: Sequence[int] | None = None,
                problems: Sequence[dict] = ()) -> list[dict]:
    """The rows ``normalize`` accepts. Every refused row is printed (row, rule, fix) and left out, with
    ``problems`` found earlier (lines that are not rows at all); when no row is left, :class:`DataError`."""
    rows = require_sequence(rows, name, "[row, row, ...]")
    kept, refused = row_problems(rows, normalize, lines)
    refused = sorted(list(problems) + refused, key=lambda p: int(str(p["row"]).split()[-1]))
    total = len(rows) + len(problems)
    if refused:
        print(f"{name}: {len(refused)} of {total} rows cannot be used and are left out (row, rule, fix):")
        for p in refused[:SHOWN_PROBLEMS]:
            print(f"  row {p['row']}: {p['rule']}  ->  {p['fix']}" if isinstance(p["row"], int)
                  else f"  {p['row']}: {p['rule']}  ->  {p['fix']}")
        if len(refused) > SHOWN_PROBLEMS:
            print(f"  ... and {len(refused) - SHOWN_PROBLEMS} more (data.row_problems lists them all)")
    if not kept:
        first = refused[0] if refused else {"row": "-", "rule": "no rows", "fix": "give rows"}
        where = first["row"] if str(first["row"]).startswith("line") else f"row {first['row']}"
        alike = len(refused) > 1 and len({p["rule"] for p in refused}) == 1
        raise DataError(f"The {name}: none of its {total} rows can be used, so there is nothing to train on. The "
                        f"first problem ({where}): {str(first['rule']).rstrip().rstrip('.')}. What to do: "
                        f"{str(first['fix']).rstrip().rstrip('.')}." + (
                            " Every row breaks this same rule: check the data's source and the column mapping "
                            "(which of your columns is the prompt, which the answers) rather than row by row."
                            if alike else ""))
    print(f"{name}: {len(kept)} usable rows.")
    return kept


# ---------------------------------------------------------------------------------------------
# Your own data: a JSONL or CSV file with your column names
# ---------------------------------------------------------------------------------------------

OWN_KINDS = {"sft": ("prompt", "completion", "messages", "system"),
             "preference": ("prompt", "chosen", "rejected", "system")}


def read_records(path: str | Path) -> tuple[list[dict], list[int], list[dict], list[str]]:
    """A JSONL or CSV file's records with their line numbers, the lines that are not records (as problems), and
    the file's column names. Text must be UTF-8; a CSV's first line names its columns."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file not found: {path}. Give the path of a .jsonl or .csv file.")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise DataError(f"{path}: read .jsonl (one JSON object per line) or .csv (a header line, then one row per "
                        "line); save the file in one of them.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}). Save the file as "
                        f"UTF-8{_encoding_hint(exc.object)}.") from exc
    records, lines, problems = [], [], []
    # lines end at "\n" (or "\r\n") only: str.splitlines() would also split at U+2028, U+0085, form feeds ..., which
    # JSON strings and CSV cells may hold (text pasted from web pages), and number every later line wrong
    file_lines = text.split("\n")
    if suffix == ".csv":
        reader = csv.DictReader(line + "\n" for line in file_lines)
        columns = list(reader.fieldnames or [])
        if not columns:
            raise DataError(f"{path} is empty: write a first line that names the columns (e.g. prompt,completion), "
                            "then one row per line.")
        for row in reader:
            if None in row:   # more cells than the header names
                problems.append({"row": f"line {reader.line_num}", "rule": f"{len(columns) + len(row[None])} cells "
                                 f"where the header names {len(columns)}", "fix": "quote cells that contain commas"})
                continue
            records.append(row)
            lines.append(reader.line_num)
    else:
        columns = []
        for lineno, line in enumerate(file_lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append({"row": f"line {lineno}", "rule": f"not valid JSON ({exc.msg} at column {exc.colno})",
                                 "fix": "write one JSON object per line"})
                continue
            if not isinstance(row, dict):
                problems.append({"row": f"line {lineno}", "rule": f"a JSON {type(row).__name__}, not an object",
                                 "fix": ONE_OBJECT})
                continue
            columns += [c for c in row if c not in columns]
            records.append(row)
            lines.append(lineno)
    if not records and not problems:
        raise DataError(f"{path} holds no rows. Add rows: one JSON object per line (.jsonl), or a header line and "
                        "one line per row (.csv).")
    return records, lines, problems, columns


def load_own(path: str | Path, kind: str = "sft", columns: dict[str, str] | None = None) -> list[dict]:
    """Your own training rows from a JSONL or CSV file, in the course's conversational form.

    ``kind`` is ``"sft"`` (prompt and completion, or ``messages``) or ``"preference"`` (prompt, chosen,
    rejected). ``columns`` maps the course's column names to yours, e.g. ``{"prompt": "question", "completion":
    "reply"}``; an optional ``"system"`` column becomes a system message. Every row that cannot be used is printed
    with its line, the rule it breaks and what to do, and left out; a file with no usable row is refused."""
    if kind not in OWN_KINDS:
        raise DataError(f"kind must be one of {list(OWN_KINDS)}, got {kind!r}: use kind='sft' (prompt and "
                        "completion) or kind='preference' (prompt, chosen and rejected).")
    columns = dict(columns or {})
    unknown = [c for c in columns if c not in OWN_KINDS[kind]]
    if unknown:
        raise DataError(f"columns maps {unknown}, which {kind} rows do not have; map some of {list(OWN_KINDS[kind])} "
                        "to your file's column names, e.g. {'prompt': 'question'}.")
    shared = {}
    for ours, theirs in columns.items():
        shared.setdefault(theirs, []).append(ours)
    if clash := {theirs: ours for theirs, ours in shared.items() if len(ours) > 1}:
        named = "; ".join(f"{' and '.join(repr(o) for o in ours)} to the same column '{theirs}'"
                          for theirs, ours in clash.items())
        raise DataError(f"columns maps {named}: each row would use the same text twice (e.g. an answer equal to its "
                        "prompt). Map each of the course's columns to a different column of your file.")
    records, lines, problems, present = read_records(path)
    needed = {"sft": ("prompt", "completion") if {"prompt", "completion"} & set(columns) else (),
              "preference": ("chosen", "rejected")}[kind]
    if unmapped := [c for c in needed if c not in columns and c not in present]:
        example = ", ".join(f"'{c}': '<your column>'" for c in unmapped)
        raise DataError(f"{path} has no column {', '.join(repr(c) for c in unmapped)} and columns maps none to it; "
                        f"its columns are {present}. Add it to the mapping, e.g. columns={{..., {example}}}"
                        " (scripts/dpo.py: --columns prompt=...,chosen=...,rejected=...).")
    absent = {ours: theirs for ours, theirs in columns.items() if theirs not in present}
    if absent:
        import difflib

        hints = "; ".join(f"'{theirs}' (for '{ours}')" + "".join(
            f" (did you mean '{m}'?)" for m in difflib.get_close_matches(theirs, present, n=1)) for ours, theirs in
            absent.items())
        raise DataError(f"{path} has no column {hints}. Its columns are {present}; fix the mapping.")
    system = columns.pop("system", None)

    def normalize(record: dict) -> dict:
        row = {ours: record.get(theirs) for ours, theirs in columns.items()}
        row |= {k: v for k, v in record.items() if k in OWN_KINDS[kind] and k not in row and k not in columns.values()}
        blank = [f"'{columns.get(k, k)}'" for k, v in row.items() if v is None or v == ""]
        if blank:
            raise RowError(f"{', '.join(blank)} is empty or missing", fix="fill it in, or drop the row")
        result = normalize_sft_row(row) if kind == "sft" else normalize_preference_row(row)
        if kind == "preference" and result["chosen"][-1]["content"].strip() == result["rejected"][-1]["content"].strip():
            raise RowError("chosen and rejected are the same answer", fix="drop the row: it carries no preference")
        if system:
            text = record.get(system)
            if not isinstance(text, str) or not text.strip():
                raise RowError(f"the system column '{system}' is empty", fix="fill it in, or drop the row")
            result["prompt"] = [{"role": "system", "content": text}] + result["prompt"]
        return result

    return usable_rows(records, normalize, f"{Path(path).name} ({kind} rows)", lines, problems)


# ---------------------------------------------------------------------------------------------
# Hub datasets (helpers.hub_data streams them), normalised; what a profile trains on
# ---------------------------------------------------------------------------------------------


def hub_sft_rows(dataset_id: str, split: str, n: int, hub_data: str | None = None) -> list[dict]:
    """``n`` rows of a chat SFT set as prompt-completion rows, each conversation cut after its first exchange
    (:func:`helpers.hub_data.first_exchanges`, which reports the kept share); unusable rows are reported."""
    rows = first_exchanges(stream_rows(dataset_id, split, n, hub_data), f"{dataset_id} [{split}]")
    return usable_rows(rows, normalize_sft_row, f"{dataset_id} [{split}]")


def hub_preference_rows(dataset_id: str, split: str, n: int, hub_data: str | None = None) -> list[dict]:
    """``n`` rows of a preference set as prompt/chosen/rejected rows; unusable rows are reported."""
    rows = stream_rows(dataset_id, split, n, hub_data)
    return usable_rows(rows, normalize_preference_row, f"{dataset_id} [{split}]")


@takes_profile
def hub_sft_mix(profile: Profile) -> list[dict]:
    """The chat rows the profile mixes into the skills SFT data (``[]`` when ``sft_dataset`` is ``"skills"``)."""
    if profile.sft_dataset == "skills":
        return []
    info = spec(profile.sft_dataset)
    if info.kind != "sft":
        raise DataError(f"sft_dataset={profile.sft_dataset!r} is a {info.kind} dataset; name a chat SFT set "
                        f"(e.g. HuggingFaceH4/ultrachat_200k) or 'skills'.")
    return hub_sft_rows(profile.sft_dataset, info.train, profile.sft_mix_rows, profile.hub_data)


@takes_profile
def hub_preferences(profile: Profile, split: str = "train") -> list[dict]:
    """The profile's preference pairs from its Hub dataset: ``"train"`` (``preference_rows`` of them) or
    ``"test"`` (``preference_test_rows``), mapped to the dataset's own split names."""
    info = spec(profile.preference_dataset)
    if info.kind != "preference":
        raise DataError(f"preference_dataset={profile.preference_dataset!r} is a {info.kind} dataset; name a "
                        "preference set (e.g. HuggingFaceH4/ultrafeedback_binarized, Anthropic/hh-rlhf) or 'skills'.")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}: use one of them.")
    name, n = (info.train, profile.preference_rows) if split == "train" else (info.test, profile.preference_test_rows)
    return hub_preference_rows(profile.preference_dataset, name, n, profile.hub_data)


@takes_profile
def sft_rows(profile: Profile) -> list[dict]:
    """Training rows for supervised fine-tuning on the profile, in prompt-completion form: the skills rows, and
    the chat rows of ``profile.sft_dataset`` when it names a Hub dataset (``sft_mix_rows`` of them)."""
    rows = [skills_to_sft(r) for r in load_skills("sft_train", profile.n_train)]
    if profile.sft_dataset == "skills":
        return rows
    mix = hub_sft_mix(profile)
    print(f"SFT data: {len(rows)} skills rows + {len(mix)} chat rows of {profile.sft_dataset}")
    return rows + mix


@takes_profile
def eval_rows(profile: Profile) -> list[dict]:
    """The held-out skills evaluation rows the profile evaluates on."""
    return load_skills("eval", profile.n_eval)


def as_dataset(rows: list[dict]):
    """Wrap rows in a ``datasets.Dataset`` (the type the TRL trainers take)."""
    from datasets import Dataset

    rows = require_sequence(rows, "as_dataset(rows)", "[{...}, {...}]")
    if not rows:
        raise DataError("Cannot build a dataset from zero rows; give at least one row.")
    return Dataset.from_list(rows)
