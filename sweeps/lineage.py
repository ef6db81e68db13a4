"""Lineage of a sweep's runs: which code, which image, which data, which resolved config.

- :func:`source_tags` — the driver's code version as MLflow's own tags
  (``mlflow.source.git.commit``, ``mlflow.source.name``, ``mlflow.source.type``), whether the
  tree was dirty, and the container image's digest when ``SEPCORE_IMAGE_DIGEST`` says it;
  :func:`dirty_diff` is the patch of a dirty tree (logged beside the parent run).
- :func:`data_splits` — a trial's datasets (train, validation and, when the sweep tests, the test
  songs it scores) as MLflow dataset inputs: name, split (``mlflow.data.context``), sample rate and
  a fingerprint of the song list with every audio file's size and mtime (no audio is read; a copy
  of the data with other mtimes, e.g. on another node, fingerprints differently);
  :func:`config_signature` — the hash of the resolved config with the data fingerprint in place of
  the data's path, and the code version.

MLflow's runs table shows the inputs in its Dataset column; the registered model version carries
the same tags (see :func:`sweeps.runner.finish_sweep`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)

# the experiment tag that makes MLflow 3's UI open an experiment in its model-training view
# (the value its UI names CUSTOM_MODEL_DEVELOPMENT; "genai_development" is the GenAI view)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

COMMIT_ENV = "SEPCORE_GIT_COMMIT"  # the code version where the tree has no .git (images, jobs)
# the container image's repo@sha256:…, set by the deployment (an image cannot know its own digest)
IMAGE_DIGEST_ENV = "SEPCORE_IMAGE_DIGEST"
DIRTY_TAG = "sepcore.git_dirty"
IMAGE_TAG = "sepcore.image_digest"
DATA_TAG = "sepcore.data_fingerprint"
# the trial signature (config_signature); not "…signature": tags named like secrets are masked
SIGNATURE_TAG = "sepcore.config_hash"
DIFF_ARTIFACT = "source"  # the parent run's folder of git_diff.patch
MAX_DIFF_BYTES = 5_000_000

CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout the sweeps package runs from

# config keys that name where a trial writes, not what it computes: left out of the signature
_NOT_SIGNED = ("train.out_dir", "train.resume", "train.progress", "data.cache_dir",
               "data.num_workers", "data.root")


def _git(*args: str, cwd: Path = CODE_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def code_version(cwd: Path = CODE_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of the code: ``git`` in the checkout the package runs from, else
    ``$SEPCORE_GIT_COMMIT`` (dirty unknown: None), else ``("unknown", None)``."""
    head = _git("rev-parse", "HEAD", cwd=cwd)
    if head and head.strip():
        status = _git("status", "--porcelain", "--untracked-files=normal", cwd=cwd)
        return head.strip(), bool(status and status.strip()) if status is not None else None
    return os.environ.get(COMMIT_ENV, "").strip() or "unknown", None


def dirty_diff(cwd: Path = CODE_ROOT) -> str:
    """``git diff HEAD`` of the checkout plus the names of untracked files, credentials masked
    (a patch can hold a pasted token); capped at ``MAX_DIFF_BYTES``."""
    from services.redact import redact

    diff = _git("diff", "HEAD", cwd=cwd) or ""
    untracked = _git("ls-files", "--others", "--exclude-standard", cwd=cwd) or ""
    text = diff
    if untracked.strip():
        text += "\n# untracked files (not in the diff):\n" + "".join(
            f"#   {name}\n" for name in untracked.splitlines())
    if len(text.encode()) > MAX_DIFF_BYTES:
        text = text.encode()[:MAX_DIFF_BYTES].decode(errors="ignore") + "\n# (truncated)\n"
    return "\n".join(redact(line) for line in text.split("\n"))


def in_ray_job() -> bool:
    """True when this driver was started by ``ray job submit`` (Ray sets the job's config)."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def source_tags(sweep_file: str, commit: str, dirty: bool | None) -> dict[str, str]:
    """MLflow's source tags for a sweep's parent and child runs, and the image digest."""
    tags = {MLFLOW_GIT_COMMIT: commit, MLFLOW_SOURCE_NAME: str(sweep_file),
            MLFLOW_SOURCE_TYPE: "JOB" if in_ray_job() else "LOCAL",
            DIRTY_TAG: "unknown" if dirty is None else str(dirty).lower()}
    image = os.environ.get(IMAGE_DIGEST_ENV, "").strip()
    if image:
        tags[IMAGE_TAG] = image
    return tags


def mark_experiment_kind(client, experiment_id: str) -> None:
    """Open the experiment in MLflow's model-training view (not its GenAI view)."""
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


# --- data --------------------------------------------------------------------------------------


@dataclass
class DataSplit:
    """One split a trial trains, validates or tests on: its songs' files (relative path → size,
    mtime in ns)."""

    split: str  # train | valid | test
    root: str
    files: dict[str, tuple[int, int]]
    songs: list[str]
    sample_rate: int
    channels: int
    layout: str = "musdb"
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        listing = json.dumps({"split": self.split, "songs": self.songs,
                              "files": sorted([k, *v] for k, v in self.files.items())})
        self.digest = hashlib.sha256(listing.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        channels = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels}ch")
        return f"{Path(self.root).name or self.root}-{self.split}-{self.sample_rate}Hz-{channels}"

    def profile(self) -> dict[str, Any]:
        return {"split": self.split, "songs": len(self.songs), "files": len(self.files),
                "bytes": sum(size for size, _ in self.files.values()),
                "sample_rate": self.sample_rate, "channels": self.channels,
                "layout": self.layout, "first_songs": self.songs[:20]}

    def to_input(self):
        """The split as an MLflow :class:`~mlflow.entities.DatasetInput` (context = split)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        # the form of MLflow's artifact dataset sources: {"uri": …}, type local / s3 / …
        scheme = self.root.split("://", 1)[0] if "://" in self.root else "local"
        dataset = Dataset(name=self.name, digest=self.digest,
                          source_type="local" if scheme == "file" else scheme,
                          source=json.dumps({"uri": self.root}),
                          profile=json.dumps(self.profile()))
        return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, self.split)])


def _stat_files(paths: dict[str, Path], root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in paths.values():
        info = Path(path).stat()
        try:
            key = str(Path(path).relative_to(root))
        except ValueError:
            key = str(path)
        out[key] = (info.st_size, info.st_mtime_ns)
    return out


def _song_files(song) -> dict[str, Path]:
    track = getattr(song, "track", None)
    if track is not None:  # MUSDB18 .stem.mp4: one file per song
        return {"stem": Path(track.path)}
    return dict(song.files)


def data_splits(data_cfg, seed: int, eval_cfg=None,
                max_tracks: int | None = None) -> list[DataSplit]:
    """The splits a trial of ``data_cfg`` sees: train and validation (as
    :func:`sepcore.data.dataset.build_datasets` splits them for ``seed``) and, when ``eval_cfg``
    is given, the songs its test evaluation scores (``eval.subset``, ``eval.tracks``, the first
    ``max_tracks`` or ``eval.max_tracks``; see :func:`sepcore.evaluate.evaluate_checkpoint`)."""
    root = Path(data_cfg.root).expanduser()
    groups: dict[str, list] = {}
    if data_cfg.layout == "folders":
        from sepcore.data.folders import list_folder_songs
        from sepcore.data.split import _named, _ratio

        def listing(subset: str) -> list:
            return list_folder_songs(root, subset if (root / subset).is_dir() else None)

        songs = listing("train")
        held = _named(data_cfg, songs) if data_cfg.valid_tracks else _ratio(data_cfg, songs, seed)
        groups["train"] = [s for s in songs if s.name not in held]
        groups["valid"] = [s for s in songs if s.name in held]
    else:
        from sepcore.data.musdb import list_songs
        from sepcore.data.split import split_train_valid

        def listing(subset: str) -> list:
            return list_songs(data_cfg, subset)

        groups["train"], groups["valid"] = split_train_valid(data_cfg, seed)
    if eval_cfg is not None:
        tested = listing(eval_cfg.subset)
        if eval_cfg.tracks:
            tested = [s for s in tested if s.name in set(eval_cfg.tracks)]
        limit = max_tracks if max_tracks is not None else eval_cfg.max_tracks
        groups["test"] = tested[:limit] if limit is not None else tested
    return [DataSplit(split=split, root=str(root),
                      files={k: v for s in songs for k, v in _stat_files(_song_files(s),
                                                                         root).items()},
                      songs=[s.name for s in songs], sample_rate=int(data_cfg.sample_rate),
                      channels=int(data_cfg.channels), layout=data_cfg.layout)
            for split, songs in groups.items() if songs]


def data_fingerprint(splits: list[DataSplit]) -> str:
    """One fingerprint of all splits (their digests, sample rate and channels)."""
    text = json.dumps(sorted((s.split, s.digest, s.sample_rate, s.channels) for s in splits))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_signature(config: dict[str, Any], data: str, commit: str) -> str:
    """Hash of a trial's resolved config (model, data, train, eval), its data fingerprint in place
    of ``data.root`` and the code version; per-attempt paths (``train.out_dir``, caches) are left
    out, so the same experiment run again has the same signature."""
    from sweeps.tracking import flatten

    flat = {k: v for k, v in flatten(config).items() if k not in _NOT_SIGNED}
    text = json.dumps({"config": flat, "data": data, "code": commit}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- a signature's runs (`python -m sweeps show SIG`) ------------------------------------------


def signature_runs(client, signature: str) -> list[Any]:
    """Every run (any experiment) tagged with ``signature``, newest first."""
    import re

    from sweeps.errors import SweepError

    if not re.fullmatch(r"[0-9a-f]{16}", signature):
        raise SweepError(f"{signature!r} is not a config signature (16 hex digits, the "
                         f"{SIGNATURE_TAG} tag of a trial's run)", key="signature")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments,
                              filter_string=f"tags.`{SIGNATURE_TAG}` = '{signature}'",
                              max_results=1000, order_by=["attributes.start_time DESC"])


def describe_signature(client, signature: str) -> str:
    """The config, the runs and the checkpoints of ``signature``, as text."""
    from mlflow.exceptions import MlflowException

    from sweeps.errors import SweepError

    runs = signature_runs(client, signature)
    if not runs:
        raise SweepError(f"no run has {SIGNATURE_TAG} = {signature} in the tracking store",
                         key="signature")
    lines = [f"signature {signature}: {len(runs)} run(s)", ""]
    config = "(no config.yaml artifact)"
    for run in runs:
        with tempfile.TemporaryDirectory(prefix="sepcore-show-") as folder:
            try:
                path = client.download_artifacts(run.info.run_id, "config.yaml", folder)
            except (MlflowException, OSError):
                continue
            config = Path(path).read_text()
            break
    lines += ["config:", *("  " + line for line in config.rstrip().splitlines()), "", "runs:"]
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        best = {k: v for k, v in metrics.items() if k.startswith("best_")}
        lines.append(f"  {run.info.run_id}  {run.info.run_name}  {run.info.status}  "
                     f"sweep {tags.get('mlflow.parentRunId', '-')}  "
                     + "  ".join(f"{k}={v:.4f}" for k, v in sorted(best.items())))
    checkpoints = [(r.info.run_id, r.data.tags["sepcore.checkpoint_uri"],
                    r.data.tags.get("sepcore.checkpoint_sha256", "")) for r in runs
                   if "sepcore.checkpoint_uri" in r.data.tags]
    lines += ["", "checkpoints:" if checkpoints else "checkpoints: none pushed (not in the "
              "sweep's top-k)"]
    lines += [f"  {uri}  (run {run_id}, sha256 {sha[:12]}…)" for run_id, uri, sha in checkpoints]
    return "\n".join(lines)
