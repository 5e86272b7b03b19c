"""Reuse checks read no data: whether a saved adapter or merged model can be reused is decided from the settings, the
weights' fingerprints and the data files' checksums, never by loading the rows or a tokenizer; and a fingerprint is
not computed again for weights that did not change, while any write to them is still noticed."""

import shutil
import time
from pathlib import Path

import pytest

from helpers import artifacts, data, dpo, grpo, hub_data, manifests, models, paths, pipeline, training
from helpers.artifacts import artifact
from helpers.paths import DATA_DIR, fingerprint
from helpers.profiles import get_profile

TINY = get_profile("tiny")


def _saved(folder: Path, inputs: dict, weights: str) -> Path:
    with artifact(folder, inputs) as tmp:
        (tmp / weights).write_bytes(folder.name.encode() * 64)
        (tmp / "config.json").write_text("{}")
    return folder


def _no_data(monkeypatch):
    """Every way of reading rows or a tokenizer fails from here on."""
    def refuse(*args, **kwargs):
        raise AssertionError("a reuse check read data or loaded a tokenizer")

    for module, name in ((dpo, "preference_rows"), (dpo, "check_lengths"), (data, "load_skills"), (data, "sft_rows"),
                         (data, "read_jsonl"), (hub_data, "stream_rows"), (grpo, "prompt_rows"),
                         (models, "load_tokenizer"), (models, "load_model")):
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture()
def saved_chain(tmp_path, monkeypatch):
    """The four folders dpo_merged builds on, saved with the manifests the pipeline asks for (computed once, which
    reads the data and records its hash), in a temporary artifacts folder."""
    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path))
    sft = _saved(training.adapter_dir(TINY), manifests.run_settings(TINY), "adapter_model.safetensors")
    sft_merged = _saved(paths.outputs_dir("sft_merged") / TINY.name,
                        {"adapter": fingerprint(sft), "base": models.base_fingerprint(TINY)}, "model.safetensors")
    adapter = _saved(training.adapter_dir(TINY, "dpo"), {"sft_model": fingerprint(sft_merged), **manifests.dpo_settings(TINY)},
                     "adapter_model.safetensors")
    final = _saved(paths.outputs_dir("dpo_merged") / TINY.name,
                   {"adapter": fingerprint(adapter), "base": fingerprint(sft_merged)}, "model.safetensors")
    return final


@pytest.mark.parametrize("fresh_process", [False, True])
def test_dpo_merged_reuses_its_folders_without_reading_data(saved_chain, monkeypatch, capsys, fresh_process):
    if fresh_process:   # what this process remembered is gone: the recorded row hashes are read back from the cache
        monkeypatch.setattr(artifacts, "_ROW_HASHES", {})
        monkeypatch.setattr(paths, "_HASHES", {})
    _no_data(monkeypatch)
    assert pipeline.dpo_merged(TINY) == saved_chain
    out = capsys.readouterr().out
    for what in ("SFT adapter", "merged model 'sft_merged'", "DPO adapter", "merged model 'dpo_merged'"):
        assert f"{what}: reusing" in out


def test_the_sft_and_grpo_settings_read_no_data_once_recorded(monkeypatch):
    wanted = manifests.run_settings(TINY), manifests.grpo_settings(TINY), manifests.dpo_settings(TINY)
    monkeypatch.setattr(artifacts, "_ROW_HASHES", {})
    _no_data(monkeypatch)
    assert (manifests.run_settings(TINY), manifests.grpo_settings(TINY), manifests.dpo_settings(TINY)) == wanted


def test_the_recorded_hash_is_the_hash_of_the_rows_that_would_run():
    """The looked-up hash equals what notebook 02 records from the pairs it trained on (pipeline.dpo_run_inputs)."""
    tokenizer = models.load_tokenizer(TINY)
    pairs = dpo.check_lengths(tokenizer, dpo.preference_rows(TINY, "dpo_train"), TINY.max_length)
    assert manifests.dpo_settings(TINY)["pairs_sha256"] == artifacts.content_hash(list(pairs))
    assert manifests.run_settings(TINY)["data_sha256"] == artifacts.content_hash(data.sft_rows(TINY))
    assert manifests.grpo_settings(TINY)["prompts_sha256"] == artifacts.content_hash(grpo.prompt_rows(TINY))


def test_an_edited_data_file_is_read_again(tmp_path, monkeypatch):
    """Other rows in the data file give other checksums, so the rows are read again and the settings differ."""
    from dataclasses import replace

    skills = replace(TINY, preference_dataset="skills")   # tiny's own pairs come from the Hub fixture
    before = manifests.dpo_settings(skills)["pairs_sha256"], manifests.run_settings(TINY)["data_sha256"]
    copy = tmp_path / "data"
    shutil.copytree(DATA_DIR, copy, ignore=shutil.ignore_patterns("hub_fixtures", "examples"))
    for split in ("dpo_train", "sft_train"):
        lines = (copy / f"skills_{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        (copy / f"skills_{split}.jsonl").write_text("".join(lines[1:] + lines[:1]), encoding="utf-8")  # first row last
    monkeypatch.setattr(data, "DATA_DIR", copy)
    after = manifests.dpo_settings(skills)["pairs_sha256"], manifests.run_settings(TINY)["data_sha256"]
    assert after[0] != before[0] and after[1] != before[1]


def test_a_fingerprint_is_remembered_until_the_weights_change(tmp_path, monkeypatch):
    """Weights that did not change are hashed once; a write that keeps the size and puts the modification time back
    still changes the status-change time, so the new bytes are hashed."""
    monkeypatch.setattr(paths, "RACY_SECONDS", 0.0)   # trust files as soon as they are written (no clock-tick guard)
    monkeypatch.setattr(paths, "_HASHES", {})
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights-1")
    time.sleep(0.05)
    first = fingerprint(weights.parent)
    hashed = []
    monkeypatch.setattr(paths, "_hash_into", lambda digest, path: hashed.append(path) or digest)
    assert fingerprint(weights.parent) == first and hashed == []   # not read again
    monkeypatch.undo()
    monkeypatch.setattr(paths, "RACY_SECONDS", 0.0)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    stat = weights.stat()
    time.sleep(0.05)
    with weights.open("r+b") as handle:   # same size, other bytes, modification time put back
        handle.write(b"W")
    paths.os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert fingerprint(weights.parent) != first
    assert artifacts.damaged_files(weights.parent, {"model.safetensors": {
        "size": stat.st_size, "sha256": paths._hash_into(__import__("hashlib").sha256(), weights).hexdigest()}}) == []


def test_a_file_changed_just_now_is_always_hashed_again(tmp_path):
    """Two same-size writes within one tick of the file system's clock keep size and times; such a recent file is
    never taken from the cache (it is hashed every time until it is RACY_SECONDS old)."""
    weights = tmp_path / "model.safetensors"
    for k in range(5):
        weights.write_bytes(f"weights-{k}".encode())
        assert fingerprint(tmp_path) == fingerprint(tmp_path)
        assert len({fingerprint(tmp_path)}) == 1
    fingerprints = []
    for k in range(3):
        weights.write_bytes(f"weights-{k}".encode())
        fingerprints.append(fingerprint(tmp_path))
    assert len(set(fingerprints)) == 3
