"""The course's offline copies of the Hub datasets in :data:`helpers.hub_data.DATASETS`, in each dataset's exact
Hub schema and split names, built from the skills data: ``python -m helpers.hub_fixtures`` writes ``data/hub_fixtures``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .data import load_skills
from .hub_data import DATASETS, FIXTURES_DIR


_MESSAGES = [{"name": "content", "dtype": "string"}, {"name": "role", "dtype": "string"}]
FEATURES = {   # as in each dataset card's dataset_info
    "HuggingFaceH4/ultrafeedback_binarized": {"prompt": "string", "prompt_id": "string", "chosen": _MESSAGES,
                                              "rejected": _MESSAGES, "messages": _MESSAGES,
                                              "score_chosen": "float64", "score_rejected": "float64"},
    "Anthropic/hh-rlhf": {"chosen": "string", "rejected": "string"},
    "HuggingFaceH4/ultrachat_200k": {"prompt": "string", "prompt_id": "string", "messages": _MESSAGES},
}
FIXTURE_ROWS = {"train": 48, "test": 24}   # rows per train-like and test-like split


def _features(dataset_id: str):
    from datasets import Features, Value

    def one(kind):
        return [{f["name"]: Value(f["dtype"]) for f in kind}] if isinstance(kind, list) else Value(kind)

    return Features({name: one(kind) for name, kind in FEATURES[dataset_id].items()})


def _turns(*pairs) -> list[dict]:
    out = []
    for user_text, assistant_text in pairs:
        out += [{"role": "user", "content": user_text}, {"role": "assistant", "content": assistant_text}]
    return out


OPENERS = [("Hi! Can you help me with a quick question?", "Of course. What would you like to know?"),
           ("Hello, I have a small task for you.", "Sure, go ahead."),
           ("Good morning. Quick one:", "Happy to help. What is it?")]


def _fixture_rows(dataset_id: str, skills: list[dict]) -> list[dict]:
    """Rows in ``dataset_id``'s schema built from skills rows (answers a checker can score), some single-turn and
    some after an opening exchange (multi-turn), plus the quirks of the real data: a pair whose two answers are
    equal (UltraFeedback has ties) and, in HH-RLHF, a pair whose conversations diverge before the last turn."""
    rows = []
    for i, s in enumerate(skills):
        history = [OPENERS[i % len(OPENERS)]] if i % 3 == 1 else []
        right, wrong = _turns(*history, (s["prompt"], s["answer"])), _turns(*history, (s["prompt"], s["wrong"]))
        if dataset_id == "HuggingFaceH4/ultrafeedback_binarized":
            if i == 5:
                wrong = right   # a tie: both answers equal (dropped and counted by dpo.clean_pairs)
            rows.append({"prompt": s["prompt"], "prompt_id": hashlib.sha256(s["prompt"].encode()).hexdigest(),
                         "chosen": right[-2:], "rejected": wrong[-2:], "messages": right[-2:],
                         "score_chosen": float(7 + i % 4), "score_rejected": float(1 + i % 5) if i != 5 else 8.0})
        elif dataset_id == "Anthropic/hh-rlhf":
            def transcript(messages):
                return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}"
                               for m in messages)
            if i == 7:   # the two transcripts differ before the last answer: refused, reported
                wrong = _turns(OPENERS[0], (s["prompt"], s["wrong"]))
            rows.append({"chosen": transcript(right), "rejected": transcript(wrong)})
        else:
            follow = ("Thanks. Now answer this one as briefly: " + skills[(i + 1) % len(skills)]["prompt"],
                      skills[(i + 1) % len(skills)]["answer"])
            messages = _turns((s["prompt"], s["answer"]), follow) if i % 2 else right
            rows.append({"prompt": messages[0]["content"], "prompt_id": hashlib.sha256(
                messages[0]["content"].encode()).hexdigest(), "messages": messages})
    return rows


def _card(dataset_id: str, counts: dict[str, int]) -> str:
    """A dataset card whose YAML header is the Hub's (configs and dataset_info), for these fixture rows."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in counts:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    lines += ["dataset_info:", "  features:"]
    for name, kind in FEATURES[dataset_id].items():
        if isinstance(kind, list):
            lines += [f"  - name: {name}", "    list:"] + [
                f"    - name: {f['name']}\n      dtype: {f['dtype']}" for f in kind]
        else:
            lines += [f"  - name: {name}", f"    dtype: {kind}"]
    lines += ["  splits:"] + [f"  - name: {s}\n    num_bytes: {size}\n    num_examples: {n}"
                              for s, (n, size) in counts.items()] + ["---", ""]
    lines += [f"# {dataset_id}: the course's offline copy", "",
              f"Written by `python -m helpers.hub_fixtures` in the exact schema and split names of "
              f"https://huggingface.co/datasets/{dataset_id} ({DATASETS[dataset_id].about}). The rows are the course's "
              "own, built from its skills data (`data/README.md`), so that the code that reads the real dataset runs "
              "offline, in tests and on the `tiny` profile. They are not the dataset's content.", ""]
    return "\n".join(lines)


def write_fixtures(root: Path | None = None) -> Path:
    """Write the offline copies of every dataset in :data:`DATASETS` under ``root`` (default
    ``data/hub_fixtures``): ``<id>/README.md`` (the Hub's YAML header: configs and features) and
    ``<id>/data/<split>-00000-of-00001.jsonl``, each split with :data:`FIXTURE_ROWS` rows. (JSON lines rather than
    the Hub's parquet: a streamed, shuffled parquet file costs 5 s of ``datasets``' thread shutdown per read.)"""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()

    root = Path(root or FIXTURES_DIR)
    train, held_out = load_skills("dpo_train"), load_skills("eval")
    for dataset_id, info in DATASETS.items():
        folder = root / dataset_id
        counts = {}
        for split in info.splits:
            pool = held_out if split.startswith("test") else train
            n = FIXTURE_ROWS["test" if split.startswith("test") else "train"]
            offset = 0 if split in (info.train, info.test) else n   # other splits: other rows
            rows = _fixture_rows(dataset_id, pool[offset:offset + n])
            path = folder / "data" / f"{split}-00000-of-00001.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows, features=_features(dataset_id)).to_json(str(path), lines=True, force_ascii=False)
            counts[split] = (len(rows), path.stat().st_size)
        (folder / "README.md").write_text(_card(dataset_id, counts), encoding="utf-8")
    return root


if __name__ == "__main__":
    print(f"wrote {write_fixtures()}")
