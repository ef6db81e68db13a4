"""Lineage of a sweep's runs (sweeps.lineage): the code version of a git checkout (clean, dirty,
none), the dirty diff with its secrets masked, the source tags under a Ray job and in a container,
a trial's data splits and their fingerprints, and the config signature."""

from __future__ import annotations

import os
import subprocess

import pytest

from sepcore.config import DataConfig, EvalConfig
from sweeps import lineage


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("lr = 1\n")
    _git(repo, "add", "train.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "one")
    return repo


def test_a_clean_checkout_gives_its_commit(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert lineage.code_version(repo) == (head, False)


def test_a_dirty_checkout_gives_its_diff_with_secrets_masked(repo):
    (repo / "train.py").write_text("lr = 2\nurl = 'http://user:hunter2@host/x?token=s3cr3t'\n")
    (repo / "notes.txt").write_text("new\n")
    commit, dirty = lineage.code_version(repo)
    assert dirty is True and len(commit) == 40
    diff = lineage.dirty_diff(repo)
    assert "-lr = 1" in diff and "+lr = 2" in diff
    assert "#   notes.txt" in diff  # untracked files are named, not included
    assert "hunter2" not in diff and "s3cr3t" not in diff


def test_without_git_the_commit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(lineage.COMMIT_ENV, raising=False)
    assert lineage.code_version(tmp_path) == ("unknown", None)
    monkeypatch.setenv(lineage.COMMIT_ENV, "0123abcd")
    assert lineage.code_version(tmp_path) == ("0123abcd", None)


def test_source_tags_name_the_job_and_the_image(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv(lineage.IMAGE_DIGEST_ENV, raising=False)
    tags = lineage.source_tags("sweeps/demo.yaml", "abc", None)
    assert tags == {"mlflow.source.git.commit": "abc", "mlflow.source.name": "sweeps/demo.yaml",
                    "mlflow.source.type": "LOCAL", "sepcore.git_dirty": "unknown"}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"metadata": {}}')
    image = "registry.example.org/sepcore-ray@sha256:" + "f" * 64
    monkeypatch.setenv(lineage.IMAGE_DIGEST_ENV, image)
    tags = lineage.source_tags("sweeps/demo.yaml", "abc", True)
    assert tags["mlflow.source.type"] == "JOB" and tags["sepcore.git_dirty"] == "true"
    assert tags["sepcore.image_digest"] == image


def test_splits_are_the_songs_the_trial_sees(synth_root):
    tree = synth_root
    from sepcore.data.musdb import list_songs
    from sepcore.data.split import split_train_valid

    data = DataConfig(root=str(tree), sample_rate=8000, channels=1)
    splits = {s.split: s for s in lineage.data_splits(data, 42, EvalConfig(), max_tracks=1)}
    train, valid = split_train_valid(data, 42)
    assert splits["train"].songs == [s.name for s in train]
    assert splits["valid"].songs == [s.name for s in valid]
    assert splits["test"].songs == [list_songs(data, "test")[0].name]  # the first max_tracks
    assert len(splits["train"].files) == 5 * len(train)  # mixture + 4 stems per song
    assert splits["train"].name == f"{tree.name}-train-8000Hz-mono"
    assert set(lineage.data_splits(data, 42)[i].split for i in range(2)) == {"train", "valid"}
    entry = splits["valid"].to_input()
    assert entry.dataset.digest == splits["valid"].digest and len(entry.dataset.digest) == 16
    assert [(t.key, t.value) for t in entry.tags] == [("mlflow.data.context", "valid")]
    assert '"sample_rate": 8000' in entry.dataset.profile


def test_a_touched_file_changes_its_split_and_the_fingerprint(synth_root):
    tree = synth_root  # the session's tree: the touched file's mtime is put back
    data = DataConfig(root=str(tree), sample_rate=8000, channels=1)
    before = {s.split: s.digest for s in lineage.data_splits(data, 42, EvalConfig())}
    valid = lineage.data_splits(data, 42)[1]
    path = tree / next(iter(valid.files))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        after_splits = lineage.data_splits(data, 42, EvalConfig())
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = {s.split: s.digest for s in after_splits}
    assert after["valid"] != before["valid"]
    assert (after["train"], after["test"]) == (before["train"], before["test"])
    other_rate = lineage.data_splits(DataConfig(root=str(tree), sample_rate=16000, channels=1),
                                     42, EvalConfig())
    assert lineage.data_fingerprint(other_rate) != lineage.data_fingerprint(after_splits)


def test_the_signature_is_the_config_data_and_code_not_the_paths():
    config = {"model": {"name": "multiband", "num_bands": 2},
              "data": {"root": "/a", "cache_dir": "/c1", "segment": 1.0},
              "train": {"lr": 1e-3, "out_dir": "/runs/t1", "seed": 42}}
    same = {**config, "data": {**config["data"], "root": "/b", "cache_dir": "/c2"},
            "train": {**config["train"], "out_dir": "/runs/t2"}}
    other_lr = {**config, "train": {**config["train"], "lr": 2e-3}}
    sign = lineage.config_signature
    assert sign(config, "data1", "abc") == sign(same, "data1", "abc")
    assert len({sign(config, "data1", "abc"), sign(other_lr, "data1", "abc"),
                sign(config, "data2", "abc"), sign(config, "data1", "abd")}) == 4


def test_lineage_tags_are_not_named_like_secrets():
    """Run tags named like secrets lose their value (sweeps.tracking redacts them)."""
    from services.redact import is_secret_name

    names = [lineage.SIGNATURE_TAG, lineage.DATA_TAG, lineage.IMAGE_TAG, lineage.DIRTY_TAG,
             *lineage.source_tags("f.yaml", "abc", None)]
    assert [n for n in names if is_secret_name(n)] == []
