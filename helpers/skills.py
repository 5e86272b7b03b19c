"""The synthetic "skills" dataset: definitions, a deterministic generator and the answer checker.

Every item is an instruction with an automatically checkable answer. Each skill owns
a pool of operands (words, countries, numbers) and a set of instruction phrasings.
Both are split once, deterministically, into a *train* part and a *held-out* part,
so that the evaluation split tests the skill on operands and phrasings the model
never saw during fine-tuning.

Run ``python -m helpers.skills`` to regenerate the JSONL files under ``data/``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

SEED = 1234

# Operand pools, in data/skills_words.json: countries -> accepted capitals, words -> accepted antonyms and a
# plausible wrong answer (a near-synonym), category members, irregular plurals and past tenses, and the words the
# sentence skills (last word) are built from.
_WORDS = json.loads((Path(__file__).resolve().parent.parent / "data" / "skills_words.json").read_text(encoding="utf-8"))
CAPITALS: dict[str, list[str]] = _WORDS["capitals"]
ANTONYMS: dict[str, list[str]] = _WORDS["antonyms"]
ANTONYM_DISTRACTORS: dict[str, str] = _WORDS["antonym_distractors"]
CATEGORIES: dict[str, list[str]] = _WORDS["categories"]
PLURALS: dict[str, str] = _WORDS["plurals"]
PAST_TENSE: dict[str, str] = _WORDS["past_tense"]
ADJECTIVES: list[str] = _WORDS["adjectives"]
NOUNS: list[str] = _WORDS["nouns"]
VERBS_PAST: list[str] = _WORDS["verbs_past"]
PREPOSITIONS: list[str] = _WORDS["prepositions"]


@dataclass(frozen=True)
class Item:
    """One skill instance before phrasing: the operand(s), accepted answers and a wrong answer."""

    skill: str
    fields: dict[str, str]
    answers: tuple[str, ...]
    wrong: str


@dataclass(frozen=True)
class Skill:
    """A skill: its name, why it is in the course, its phrasings and how its items are built."""

    name: str
    why: str
    train_templates: tuple[str, ...]
    eval_templates: tuple[str, ...]
    case_sensitive: bool = False
    build: Callable[[random.Random], tuple[list[Item], list[Item]]] = field(default=lambda rng: ([], []))


def _split(keys: Sequence[str], eval_fraction: float, salt: str) -> tuple[list[str], list[str]]:
    """Split keys deterministically by a hash, independent of order and of Python's hash seed."""
    train, held_out = [], []
    for key in sorted(keys):
        digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
        (held_out if digest[0] / 256 < eval_fraction else train).append(key)
    return train, held_out


def _capital_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    train_keys, eval_keys = _split(list(CAPITALS), 0.4, "capital")

    def item(country: str, pool: list[str]) -> Item:
        wrong = rng.choice([c for c in pool if c not in CAPITALS[country]])
        return Item("capital", {"x": country}, tuple(CAPITALS[country]), wrong)

    train_pool = [CAPITALS[k][0] for k in train_keys]
    eval_pool = [CAPITALS[k][0] for k in eval_keys]
    return [item(k, train_pool) for k in train_keys], [item(k, eval_pool) for k in eval_keys]


def _antonym_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    # Split on the pair so no word appears on both sides (e.g. "hot" in train, "cold" in eval).
    train_keys, eval_keys = _split(list(ANTONYMS), 0.35, "antonym")
    train_words = {w for k in train_keys for w in [k, *ANTONYMS[k]]}
    eval_keys = [k for k in eval_keys if k not in train_words and not set(ANTONYMS[k]) & train_words]
    make = lambda k: Item("antonym", {"x": k}, tuple(ANTONYMS[k]), ANTONYM_DISTRACTORS[k])  # noqa: E731
    return [make(k) for k in train_keys], [make(k) for k in eval_keys]


def _category_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    words = {w: cat for cat, ws in CATEGORIES.items() for w in ws}
    train_keys, eval_keys = _split(list(words), 0.35, "category")
    cats = sorted(CATEGORIES)

    def item(word: str) -> Item:
        wrong = rng.choice([c for c in cats if c != words[word]])
        return Item("category", {"x": word, "options": ", ".join(cats)}, (words[word],), wrong)

    return [item(k) for k in train_keys], [item(k) for k in eval_keys]


def _plural_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    train_keys, eval_keys = _split(list(PLURALS), 0.35, "plural")

    def naive(word: str) -> str:
        guess = word + "s"
        return guess if guess != PLURALS[word] else word + "es"

    make = lambda k: Item("plural", {"x": k}, (PLURALS[k],), naive(k))  # noqa: E731
    return [make(k) for k in train_keys], [make(k) for k in eval_keys]


def _past_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    train_keys, eval_keys = _split(list(PAST_TENSE), 0.35, "past")

    def naive(verb: str) -> str:
        guess = verb + ("d" if verb.endswith("e") else "ed")
        return guess if guess != PAST_TENSE[verb] else verb
    make = lambda k: Item("past_tense", {"x": k}, (PAST_TENSE[k],), naive(k))  # noqa: E731
    return [make(k) for k in train_keys], [make(k) for k in eval_keys]


def _vocab_split() -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    adj_train, adj_eval = _split(ADJECTIVES, 0.4, "adjective")
    noun_train, noun_eval = _split(NOUNS, 0.4, "noun")
    return (adj_train, noun_train), (adj_eval, noun_eval)


def _sentence_items(rng: random.Random, adjs: list[str], nouns: list[str], n: int) -> list[Item]:
    items, seen = [], set()
    while len(items) < n:
        a, b = rng.sample(nouns, 2)
        words = ["the", rng.choice(adjs), a, rng.choice(VERBS_PAST), rng.choice(PREPOSITIONS), "the", b]
        if rng.random() < 0.5:
            words.insert(6, rng.choice(adjs))
        sentence = " ".join(words)
        if sentence in seen:
            continue
        seen.add(sentence)
        items.append(Item("last_word", {"x": sentence}, (words[-1],), words[2]))
    return items


def _last_word_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    (adj_t, noun_t), (adj_e, noun_e) = _vocab_split()
    return _sentence_items(rng, adj_t, noun_t, 90), _sentence_items(rng, adj_e, noun_e, 40)


def _next_number_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    numbers = [str(n) for n in range(10, 1000)]
    train_nums, eval_nums = _split(numbers, 0.4, "number")  # same partition as larger_number
    make = lambda x: Item("next_number", {"x": x}, (str(int(x) + 1),), str(int(x) - 1))  # noqa: E731
    return [make(x) for x in rng.sample(train_nums, 90)], [make(x) for x in rng.sample(eval_nums, 40)]


def _larger_items(rng: random.Random) -> tuple[list[Item], list[Item]]:
    numbers = [str(n) for n in range(10, 1000)]
    train_nums, eval_nums = _split(numbers, 0.4, "number")

    def pairs(pool: list[str], n: int) -> list[Item]:
        out, seen = [], set()
        while len(out) < n:
            a, b = rng.sample(pool, 2)
            if (a, b) in seen:
                continue
            seen.add((a, b))
            hi, lo = (a, b) if int(a) > int(b) else (b, a)
            out.append(Item("larger_number", {"a": a, "b": b}, (hi,), lo))
        return out

    return pairs(train_nums, 90), pairs(eval_nums, 40)


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in [
        Skill(
            "capital",
            "Recalls a fact the pretrained model partly knows; SFT teaches it to answer with the bare name.",
            ("What is the capital of {x}? Answer with the city name only.",
             "Name the capital city of {x}. Reply with just the name.",
             "{x} has which city as its capital? Give only the city.",
             "Tell me the capital of {x}, nothing else."),
            ("Which city is the capital of {x}? Respond with only the city's name.",
             "Capital city of {x}? Just the name, please."),
            build=_capital_items,
        ),
        Skill(
            "antonym",
            "Lexical knowledge the model has from pretraining; the answer must be one word.",
            ("What is the opposite of '{x}'? Answer with one word.",
             "Give the antonym of '{x}'. Reply with a single word.",
             "Write one word that means the opposite of '{x}'.",
             "Antonym of '{x}'? One word only."),
            ("Which word is opposite in meaning to '{x}'? Respond with just that word.",
             "Tell me a word meaning the reverse of '{x}'. Only the word."),
            build=_antonym_items,
        ),
        Skill(
            "category",
            "Classification into a fixed label set: learnable from world knowledge plus the output format.",
            ("Which category does '{x}' belong to: {options}? Answer with the category only.",
             "Classify '{x}' as one of: {options}. Reply with the category.",
             "'{x}' is a kind of what? Choose from {options}. One word.",
             "Pick the category of '{x}' from this list: {options}. Only the category."),
            ("Categories: {options}. Which one fits '{x}'? Respond with that category alone.",
             "Which of these describes '{x}' best: {options}? Say just the right category."),
            build=_category_items,
        ),
        Skill(
            "plural",
            "Morphology with irregular forms (mice, knives, cacti): tests knowledge, not a suffix rule.",
            ("What is the plural of '{x}'? Answer with one word.",
             "Write the plural form of '{x}'. Only the word.",
             "Plural of '{x}'? Reply with the word alone.",
             "Give the plural of the noun '{x}'."),
            ("How do you say more than one '{x}'? Respond with just the plural.",
             "Turn '{x}' into its plural form. One word only."),
            build=_plural_items,
        ),
        Skill(
            "past_tense",
            "Irregular and regular verb morphology (went, bought, stopped).",
            ("What is the past tense of '{x}'? Answer with one word.",
             "Write the simple past of the verb '{x}'. Only the word.",
             "Past tense of '{x}'? Reply with the word alone.",
             "Give the past form of the verb '{x}'."),
            ("Yesterday I ___ (to {x}). Respond with only the missing verb form.",
             "Convert '{x}' to the simple past tense. One word only."),
            build=_past_items,
        ),
        Skill(
            "next_number",
            "Counting: the model knows the successor of a number but must answer with the number alone.",
            ("What number comes right after {x}? Answer with the number only.",
             "What is {x} plus one? Reply with the number.",
             "Give the integer that follows {x}. Only the number.",
             "Count up by one from {x}. Just the next number."),
            ("Which whole number is one greater than {x}? Respond with that number alone.",
             "If you start at {x} and add 1, what do you get? Only the number."),
            build=_next_number_items,
        ),
        Skill(
            "last_word",
            "Reading the input: copy a word from the prompt. Transformers learn copying quickly.",
            ("What is the last word of this sentence: '{x}'? Answer with the word only.",
             "Sentence: '{x}'. Which word comes last? Reply with that word.",
             "Give the final word of '{x}'. Only the word.",
             "Tell me the last word in: '{x}'."),
            ("Here is a sentence: '{x}'. Respond with just its closing word.",
             "Which word ends the sentence '{x}'? One word only."),
            build=_last_word_items,
        ),
        Skill(
            "larger_number",
            "Comparing two numbers: format plus a digit-level comparison the model partly knows.",
            ("Which number is larger, {a} or {b}? Answer with the number only.",
             "Pick the bigger number: {a} or {b}. Reply with the number.",
             "Of {a} and {b}, which is greater? Only the number.",
             "Tell me the larger of {a} and {b}."),
            ("Compare {a} and {b}. Respond with just the greater one.",
             "{a} versus {b}: which is higher? Give only that number."),
            build=_larger_items,
        ),
    ]
}


# --------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------

_QUOTES = "\"'`“”‘’«»*"


class CheckerInputError(TypeError):
    """The checker was given something other than text where text belongs (a response, an accepted answer) or one
    string where the list of accepted answers belongs; the message says what to pass."""


def _text(value, what: str, example: str) -> str:
    """``value`` when it is a string; otherwise :class:`CheckerInputError` naming what was given and what to pass."""
    if isinstance(value, str):
        return value
    hint = (" (a list: call the checker once per response)" if isinstance(value, (list, tuple)) else
            " (None: the model's answer is missing; pass '' for an empty answer)" if value is None else "")
    raise CheckerInputError(f"{what} must be a string, got {type(value).__name__} {value!r:.60}{hint}. Pass one "
                            f"string, e.g. {example}.")


def normalize_answer(text: str, case_sensitive: bool = False) -> str:
    """Normalise a model response or a reference answer before exact comparison.

    Rules, in order: Unicode NFKD with accents removed; surrounding whitespace stripped;
    surrounding quotes, backticks and markdown asterisks stripped; one trailing '.', '!' or
    '?' removed; inner whitespace collapsed to single spaces; lower-cased unless
    ``case_sensitive``. Nothing else is forgiven: "The capital is Paris." stays a sentence.
    """
    text = unicodedata.normalize("NFKD", _text(text, "normalize_answer()'s text", "normalize_answer('Paris.')"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.strip().strip(_QUOTES).strip()
    text = re.sub(r"[.!?]$", "", text).strip().strip(_QUOTES).strip()
    text = re.sub(r"\s+", " ", text)
    return text if case_sensitive else text.lower()


def check_answer(response: str, answers: Sequence[str], case_sensitive: bool = False) -> bool:
    """True when the normalised response equals one of the normalised accepted answers exactly."""
    got = normalize_answer(_text(response, "The response", RESPONSE_EXAMPLE), case_sensitive)
    return any(got == normalize_answer(a, case_sensitive) for a in _answer_list(answers))


RESPONSE_EXAMPLE = "check_answer(responses[i], row['answers'])"


def _answer_list(answers: Sequence[str]) -> list[str]:
    """The accepted answers as a list of strings: one answer string where the list belongs (each character would
    count), an empty list (nothing could be right) or an answer that is not text is refused, saying what to pass."""
    if isinstance(answers, str):
        raise CheckerInputError(f"answers must be a list of accepted answers such as [{answers!r}], not the string "
                                f"{answers!r}: a string would be checked one character at a time. Pass a list: [{answers!r}].")
    if isinstance(answers, dict) or not hasattr(answers, "__iter__"):
        raise CheckerInputError(f"answers must be a list of accepted answers, got {type(answers).__name__} "
                                f"{answers!r:.60}. Pass a list of strings, e.g. ['Paris'].")
    answers = list(answers)
    if not answers:
        raise CheckerInputError("answers is an empty list: no response could be right. Pass at least one accepted "
                                "answer, e.g. ['Paris'].")
    for i, a in enumerate(answers):
        _text(a, f"answers[{i}]", f"[{str(a)!r}] (write numbers as text)")
    return answers


def mentions_answer(response: str, answers: Sequence[str], case_sensitive: bool = False) -> bool:
    """Lenient check: an accepted answer appears as a whole word/phrase anywhere in the response.

    Used only to show *why* a model fails the exact check (it knew the answer but wrapped it
    in a sentence); never used as the skill accuracy.
    """
    got = normalize_answer(_text(response, "The response", RESPONSE_EXAMPLE.replace("check_", "mentions_")),
                           case_sensitive)
    for answer in _answer_list(answers):
        ref = re.escape(normalize_answer(answer, case_sensitive))
        if re.search(rf"(?<![\w-]){ref}(?![\w-])", got):
            return True
    return False


# --------------------------------------------------------------------------------------
# Generation of the three splits
# --------------------------------------------------------------------------------------


KNOWLEDGE_SKILLS = ("capital", "antonym", "plural", "past_tense")


def _words(item: Item) -> set[str]:
    """Operands of an item (and its answers for knowledge skills), lower-cased, for leakage checks."""
    words = {v.lower() for k, v in item.fields.items() if k != "options"}
    if item.skill in KNOWLEDGE_SKILLS:
        words |= {a.lower() for a in item.answers}
    return words


def _row(skill: Skill, item: Item, template: str) -> dict:
    prompt = template.format(**item.fields)
    return {
        "skill": skill.name,
        "prompt": prompt,
        "answer": item.answers[0],
        "answers": list(item.answers),
        "wrong": item.wrong,
        "case_sensitive": skill.case_sensitive,
    }


def generate_splits(seed: int = SEED, sft_per_item: int = 1) -> dict[str, list[dict]]:
    """Build the three splits as lists of flat rows, deterministically from ``seed``.

    - ``sft_train``: one row per training operand and phrasing draw (``sft_per_item`` phrasings each).
    - ``dpo_train``: preference rows (prompt, chosen = correct answer, rejected = plausible wrong).
    - ``eval``: held-out operands with held-out phrasings; also carries ``wrong`` so the same rows
      serve as held-out preference pairs.
    """
    rng = random.Random(seed)
    built = {name: skill.build(rng) for name, skill in SKILLS.items()}
    # Held-out means held out across *all* skills: drop an eval item if one of its operands (or, for
    # knowledge skills, its answer) occurs anywhere in training, e.g. 'day' as a plural operand.
    seen = {w for train, _ in built.values() for item in train for w in _words(item)}
    splits: dict[str, list[dict]] = {"sft_train": [], "dpo_train": [], "eval": []}
    for name, skill in SKILLS.items():
        train_items, eval_items = built[name]
        for item in train_items:
            for template in rng.sample(skill.train_templates, sft_per_item):
                splits["sft_train"].append(_row(skill, item, template))
            row = _row(skill, item, rng.choice(skill.train_templates))
            splits["dpo_train"].append(row)
        for item in eval_items:
            if not (_words(item) & seen):
                splits["eval"].append(_row(skill, item, rng.choice(skill.eval_templates)))
    for name in ("sft_train", "dpo_train"):
        rng.shuffle(splits[name])
    for rows in splits.values():
        for i, row in enumerate(rows):
            row["id"] = f"{row['skill']}-{i:04d}"
    return splits


def to_jsonl(rows: list[dict]) -> str:
    """Serialise rows as JSONL with sorted keys, so regeneration is byte-for-byte stable."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)


def write_data(folder: Path, seed: int = SEED) -> dict[str, Path]:
    """Write ``skills_<split>.jsonl`` files into ``folder`` and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in generate_splits(seed).items():
        path = folder / f"skills_{name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(to_jsonl(rows), encoding="utf-8")
        tmp.replace(path)
        paths[name] = path
    return paths


if __name__ == "__main__":  # pragma: no cover - exercised through the CLI
    root = Path(__file__).resolve().parent.parent / "data"
    for split, p in write_data(root).items():
        print(f"wrote {p.relative_to(root.parent)}: {sum(1 for _ in p.open())} rows")
