"""The one typed config tree: ``model``, ``audio``, ``data``, ``train``, ``eval``.

A config file (YAML) looks like::

    model:
      name: multiband          # a registry name (sepcore.models)
      num_bands: 2             # the rest is that model's config dataclass
      ...
    audio: {sample_rate: 44100, channels: 2, sources: [vocals, accompaniment]}
    data: {root: data/synth-musdb, segment: 8.0, ...}
    train: {epochs: 150, lr: 1.0e-4, loss: l1, ...}
    eval: {subset: test, ...}

``audio`` states the sample rate, the channel count and the sources once; :func:`config_from_dict`
copies them into the model config (``sample_rate``, ``audio_channels``, ``sources``: a model is
built from its own config alone) and the data config (``sample_rate``, ``channels``, ``targets``).
Stating any of them under ``model:`` or ``data:`` is an error that names the ``audio`` key to use.

``load_config(path, overrides)`` merges the file with OmegaConf dotlist overrides
(``train.epochs=3``, ``audio.sample_rate=8000``), validates every section against its dataclass
(unknown keys are errors that name the key and the file) and returns an :class:`ExperimentConfig`
whose ``model`` is the typed model config (``model_name`` holds its registry name).

Every numeric value is checked against its domain (:data:`DOMAINS`: sizes >= 1, rates finite and
> 0, ``eval.overlap`` in [0, 1), ``eval.segment`` and the hop between chunks
``eval.segment * (1 - eval.overlap)`` >= :data:`MIN_EVAL_SEGMENT` s, …) whenever a
config is built, so ``sep``, checkpoints and sweep validation refuse the same values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sepcore.errors import ConfigError

STEMS = ("vocals", "drums", "bass", "other")
ACCOMPANIMENT = "accompaniment"


@dataclass
class AudioConfig:
    """What the model and the data share, stated once (see the module docstring)."""

    sample_rate: int = 44100  # Hz; audio is resampled to it (8000, 16000, 22050, 44100)
    channels: int = 2  # 1 = mono (channel mean), 2 = stereo
    sources: list[str] = field(default_factory=lambda: ["vocals", ACCOMPANIMENT])  # output order


# audio field -> (model config field, data config field) that it fills
AUDIO_FIELDS = {
    "sample_rate": ("sample_rate", "sample_rate"),
    "channels": ("audio_channels", "channels"),
    "sources": ("sources", "targets"),
}


def model_audio(audio: AudioConfig) -> dict[str, Any]:
    """The model config fields that ``audio`` fills (``sample_rate``, ``audio_channels``, …)."""
    return {model_key: _copy(getattr(audio, name))
            for name, (model_key, _) in AUDIO_FIELDS.items()}


def audio_from_model(model_fields: dict[str, Any]) -> dict[str, Any]:
    """The ``audio`` block that a (full) model config's fields imply; absent fields are left out."""
    return {name: _copy(model_fields[model_key])
            for name, (model_key, _) in AUDIO_FIELDS.items() if model_key in model_fields}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


@dataclass
class AugmentConfig:
    """On-the-fly augmentations (Meta-TasNet, Samuel et al., ICASSP 2020; Défossez et al. 2019)."""

    random_channel: bool = False  # pick a channel at random, copied to every channel (stereo)
    channel_pick: str = "shared"  # random_channel: one pick for all sources, or one per "source"
    gain: bool = True  # random gain per source in [gain_min, gain_max]
    gain_min: float = 0.75
    gain_max: float = 1.25
    channel_swap: bool = True  # swap left/right per source with probability 0.5
    remix: bool = True  # draw each source from a different random song (cross-song remix)
    remix_share: float = 1.0  # remix: share of every batch remixed (Meta-TasNet: 0.5)


@dataclass
class DataConfig:
    """Where the songs come from and how they are cut. In an experiment config ``targets``,
    ``sample_rate`` and ``channels`` are filled from the ``audio`` block (never written under
    ``data:``); code that uses the data layer alone sets them directly."""

    root: str = "data/synth-musdb"  # MUSDB18(-HQ) root or any tree with the same layout
    is_wav: bool = True  # MUSDB18-HQ / WAV tree (True) or .stem.mp4 MUSDB18 (False)
    targets: list[str] = field(default_factory=lambda: ["vocals", ACCOMPANIMENT])  # audio.sources
    sample_rate: int = 44100  # audio.sample_rate; audio is resampled to it
    channels: int = 2  # audio.channels: 1 = mono (channel mean), 2 = stereo
    segment: float = 4.0  # seconds per training chunk
    samples_per_track: int = 64  # training chunks per track per epoch
    valid_segment: float | None = None  # seconds per validation chunk (None = whole tracks)
    # validation split: "musdb" uses musdb's own split="valid" (14 named tracks; needs them),
    # "tracks" uses valid_tracks, "ratio" holds out valid_ratio of the train songs; "auto" picks
    # valid_tracks when set, else musdb's split when the tree holds its named tracks, else ratio.
    valid_split: str = "auto"
    valid_tracks: list[str] = field(default_factory=list)
    valid_ratio: float = 0.2
    short_tracks: str = "pad"  # songs shorter than one chunk: "pad" (with a warning) or "skip"
    cache_dir: str | None = None  # decoded+resampled audio cache (None = <cwd>/.cache/sepcore)
    # DataLoader workers: "auto" = usable CPU cores - 1 when training on CUDA, 0 on the CPU
    num_workers: int | str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # "musdb": a MUSDB18(-HQ)-layout tree (targets: stems/accompaniment); "folders": a multitrack
    # folder dataset whose stems are grouped into classes by the YAML ``mapping`` (targets: class
    # names; sepcore.data.folders); ``missing`` overrides the mapping's filter/silence policy.
    layout: str = "musdb"
    mapping: str | None = None
    missing: str | None = None


@dataclass
class TrainConfig:
    epochs: int = 150
    steps_per_epoch: int | None = None  # None = one pass over the epoch's chunks
    max_steps: int | None = None  # global step budget (stops training when reached)
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_patience: int = 3  # halve the LR after this many epochs without improvement
    lr_factor: float = 0.5
    early_stop: int = 20  # stop after this many epochs without improvement (0 = never)
    grad_clip: float | None = 5.0  # max gradient norm (None = no clipping)
    loss: str = "l1"  # l1 | mse | sisdr (negative SI-SDR) | gkl (on STFT magnitudes), final est.
    loss_weight: float = 1.0  # α: weight of the final estimate's loss
    aux_loss: str | None = None  # L_a for intermediate estimates (None = same as loss)
    aux_weight: float = 0.0  # β: weight of intermediate estimates' loss (0 = not supervised)
    source_weights: list[float] | None = None  # per-source loss weights (None = equal)
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # mixed precision (AMP_MODES): auto = bf16 on a GPU that supports it, else off; bf16 also
    # runs on the CPU; fp16 uses a gradient scaler (old configs' true = auto, false = off)
    amp: str = "auto"
    log_every: int = 50  # steps between host syncs of the step loop (loss, finiteness, skips)
    max_skipped_steps: int = 20  # fp16: this many consecutive non-finite steps = divergence
    deterministic: bool = False  # torch.use_deterministic_algorithms (exact resume on CPU)
    out_dir: str = "runs/default"  # last.safetensors, best.safetensors (+ epoch_NNN.safetensors)
    keep_every: bool = False  # keep one checkpoint per epoch as epoch_NNN.ckpt
    resume: str | None = None  # a checkpoint to resume from ("auto" = out_dir/last.ckpt if present)
    progress: bool = True  # tqdm bar per epoch (only when attached to a TTY)
    # Transfer set-ups (thesis ch. 6: tl / retrain / finetune; sepcore.train.apply_transfer).
    # Patterns are fnmatch patterns over model.named_parameters() names, matched against the full
    # name or any suffix after a dot ("fc3.*" matches "unmix.vocals.fc3.weight").
    init_from: str | None = None  # a sepcore checkpoint whose weights initialise the model
    init_keys: list[str] | None = None  # load only the checkpoint tensors matching (None = all)
    init_strict: bool = True  # every (selected) tensor must exist in both with the same shape
    trainable: list[str] | None = None  # only matching parameters train (None = all)
    frozen: list[str] | None = None  # matching parameters do not train (M5: encoder.*, decoder.*)
    reinit: list[str] | None = None  # re-initialise matching parameters after init_from


@dataclass
class EvalConfig:
    subset: str = "test"
    tracks: list[str] = field(default_factory=list)  # limit to these track names (empty = all)
    max_tracks: int | None = None
    segment: float = 10.0  # seconds per inference chunk
    overlap: float = 0.25  # overlap between chunks (fraction)
    win: float = 1.0  # BSSEval window (s)
    hop: float = 1.0  # BSSEval hop (s)
    out_dir: str | None = None  # per-track museval JSON (None = <train.out_dir>/eval)
    silence_threshold_db: float = -60.0  # PES/VAD: a target segment below this level is silent
    nsdr: bool = False  # also score the mixture as the estimate and report NSDR (SDR gain)
    device: str = "auto"  # where `sep evaluate` / `sep separate` run the model (auto | cpu | cuda)
    # sisec: estimates resampled to the references' native rate and channel layout (SiSEC 2018);
    # model: scored at the model's own rate and channel count (quick exploration only)
    protocol: str = "sisec"
    bsseval: str = "v4"  # v4: 1 s windows, filters on the whole track; v3: one whole-signal window
    # where BSSEval runs: auto = on the model's GPU when it runs on one (CUDA tensors), else on
    # the CPU (numpy arrays); cpu; cuda (the model's GPU, or the current one)
    metrics_device: str = "auto"


@dataclass
class ExperimentConfig:
    """A validated config. ``audio`` is the one statement of rate, channels and sources; the
    copies in ``model`` and ``data`` are filled from it by :func:`config_from_dict`."""

    model_name: str
    model: Any  # the typed config of model_name
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict in file form: ``model.name`` + model fields, the ``audio`` block,
        and ``data`` without the fields the audio block fills."""
        self._check_audio_copies()
        model = dataclasses.asdict(self.model)
        data = dataclasses.asdict(self.data)
        for model_key, data_key in AUDIO_FIELDS.values():
            model.pop(model_key, None)
            data.pop(data_key, None)
        return {
            "model": {"name": self.model_name, **model},
            "audio": dataclasses.asdict(self.audio),
            "data": data,
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }

    def _check_audio_copies(self) -> None:
        """The model's and the data's copies must still equal ``audio`` (set them through it)."""
        for name, (model_key, data_key) in AUDIO_FIELDS.items():
            want = _copy(getattr(self.audio, name))
            for section, obj, key in (("model", self.model, model_key),
                                      ("data", self.data, data_key)):
                if hasattr(obj, key) and _copy(getattr(obj, key)) != want:
                    raise ConfigError(f"{section}.{key} = {getattr(obj, key)!r} differs from "
                                      f"audio.{name} = {want!r}; change audio.{name} and "
                                      "rebuild the config with config_from_dict",
                                      key=f"audio.{name}")

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.create(self.to_dict()))


_SECTIONS = {"audio": AudioConfig, "data": DataConfig, "train": TrainConfig,
             "eval": EvalConfig}

# Keys that older configs used, and what replaces them (a one-line error instead of "unknown key").
REMOVED_KEYS = {
    **{f"{section}.{key}": f"use audio.{name} (stated once, for the model and the data)"
       for name, keys in AUDIO_FIELDS.items()
       for section, key in zip(("model", "data"), keys, strict=True)},
    "model.encoder.pretrained": "a model never reads a file; load a trained model's "
                                "encoder/decoder with train.init_from=<checkpoint> and "
                                "train.init_keys=[encoder.*, decoder.*]",
    "model.encoder.frozen": "freeze the encoder/decoder with train.frozen=[encoder.*, decoder.*]",
}


def _has_key(node: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(node, DictConfig | dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_removed_keys(node: DictConfig, file: str | None) -> None:
    for key, hint in REMOVED_KEYS.items():
        if _has_key(node, key):
            raise ConfigError(f"key '{key}' is no longer supported: {hint}", key=key, file=file)


def typed(cls: type, values: Any, prefix: str, file: str | None = None,
          error: type[ConfigError] = ConfigError, context: str = ""):
    """An instance of dataclass ``cls`` from ``values`` (a mapping or DictConfig; None = the
    defaults), checked by OmegaConf against the dataclass.

    The one place where OmegaConf's merge errors become sepcore errors: an unknown key or a wrong
    type raises ``error`` (ConfigError or a subclass) in one line naming ``<prefix>.<key>`` and
    ``file``; ``context`` starts the message (e.g. which model's config it is).
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), values if values is not None else {})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
        msg = str(getattr(exc, "msg", None) or exc).splitlines()[0]  # one line
        raise error(f"{context}key '{prefix}.{key}': {msg}", key=f"{prefix}.{key}",
                    file=file) from None


def config_from_dict(raw: dict | DictConfig, file: str | None = None) -> ExperimentConfig:
    """Validate a nested mapping and build the typed :class:`ExperimentConfig`."""
    from sepcore.models import make_config

    node = raw if isinstance(raw, DictConfig) else OmegaConf.create(raw)
    unknown = [k for k in node.keys() if k not in ("model", *_SECTIONS)]
    if unknown:
        raise ConfigError(
            f"unknown top-level key '{unknown[0]}' (expected model, audio, data, train, eval)",
            key=str(unknown[0]),
            file=file,
        )
    _check_removed_keys(node, file)
    if "model" not in node or "name" not in node.model:
        raise ConfigError("missing 'model.name' (a registry name, see `sep info`)",
                          key="model.name",
                          file=file)
    sections = {s: typed(cls, node.get(s), s, file) for s, cls in _SECTIONS.items()}
    sections["train"] = dataclasses.replace(sections["train"],
                                            amp=amp_mode(sections["train"].amp, file))
    check_domains(sections, file)
    audio = sections["audio"]
    _check_audio(audio, sections["data"], file)
    _check_eval(sections["eval"], file)
    model_raw = OmegaConf.to_container(node.model, resolve=True)
    name = model_raw.pop("name")
    try:
        model_cfg = make_config(name, {**model_raw, **model_audio(audio)})
    except ConfigError as exc:
        raise ConfigError(str(exc), key=exc.key, file=file) from None
    sections["data"] = dataclasses.replace(
        sections["data"], **{data_key: _copy(getattr(audio, audio_key))
                             for audio_key, (_, data_key) in AUDIO_FIELDS.items()})
    return ExperimentConfig(model_name=name, model=model_cfg, **sections)


AMP_MODES = ("auto", "bf16", "fp16", "off")
# booleans of older configs and checkpoints (OmegaConf turns them into strings for a str field;
# YAML reads on/off as booleans too)
_AMP_BOOLEANS = {"true": "auto", "false": "off"}


def amp_mode(value: Any, file: str | None = None) -> str:
    """``train.amp`` as one of :data:`AMP_MODES` (true → auto, false → off)."""
    mode = _AMP_BOOLEANS.get(str(value).lower(), str(value).lower())
    if mode not in AMP_MODES:
        raise ConfigError(f"key 'train.amp' = {value!r} must be one of {', '.join(AMP_MODES)} "
                          "(or true/false)", key="train.amp", file=file)
    return mode


# Shortest inference chunk (s): shorter ones would run the model a great many times per second.
MIN_EVAL_SEGMENT = 0.05


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v) -> bool:
    return _finite(v) and v > 0


def _non_negative(v) -> bool:
    return _finite(v) and v >= 0


def _at_least_one(v) -> bool:
    return _finite(v) and v >= 1


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


# "section.key" -> (check, what the value must be): the domain of every numeric config value,
# checked whenever a config is built (sep, checkpoints, sweep validation: config_from_dict)
DOMAINS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "audio.sample_rate": (_positive, "a positive number of Hz"),
    "data.segment": (_positive, "a finite number of seconds > 0"),
    "data.samples_per_track": (_at_least_one, "an integer >= 1"),
    "data.valid_segment": (_optional(_positive), "null or a finite number of seconds > 0"),
    "data.valid_ratio": (lambda v: _finite(v) and 0 < v < 1, "in (0, 1)"),
    "data.num_workers": (lambda v: v == "auto" or (isinstance(v, int) and _non_negative(v)),
                         "'auto' or an integer >= 0"),
    "data.augment.gain_min": (_positive, "finite and > 0"),
    "data.augment.gain_max": (_positive, "finite and > 0"),
    "data.augment.remix_share": (lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    "data.augment.channel_pick": (lambda v: v in ("shared", "source"), "'shared' or 'source'"),
    "train.epochs": (_at_least_one, "an integer >= 1"),
    "train.steps_per_epoch": (_optional(_at_least_one), "null or an integer >= 1"),
    "train.max_steps": (_optional(_at_least_one), "null or an integer >= 1"),
    "train.batch_size": (_at_least_one, "an integer >= 1"),
    "train.lr": (_positive, "finite and > 0"),
    "train.weight_decay": (_non_negative, "finite and >= 0"),
    "train.lr_patience": (_non_negative, "an integer >= 0"),
    "train.lr_factor": (lambda v: _finite(v) and 0 < v < 1, "in (0, 1)"),
    "train.early_stop": (_non_negative, "an integer >= 0 (0 = never)"),
    "train.grad_clip": (_optional(_positive), "null or finite and > 0"),
    "train.loss_weight": (_non_negative, "finite and >= 0"),
    "train.aux_weight": (_non_negative, "finite and >= 0"),
    "train.log_every": (_at_least_one, "an integer >= 1"),
    "train.max_skipped_steps": (_at_least_one, "an integer >= 1"),
    "train.source_weights": (lambda v: v is None or all(_non_negative(w) for w in v),
                             "null or a list of finite weights >= 0"),
    "eval.max_tracks": (_optional(_at_least_one), "null or an integer >= 1"),
    "eval.segment": (lambda v: _finite(v) and v >= MIN_EVAL_SEGMENT,
                     f"a finite number of seconds >= {MIN_EVAL_SEGMENT}"),
    "eval.overlap": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    "eval.win": (_positive, "a finite number of seconds > 0"),
    "eval.hop": (_positive, "a finite number of seconds > 0"),
    "eval.silence_threshold_db": (_finite, "a finite number of dB"),
}


def check_domains(sections: dict[str, Any], file: str | None = None) -> None:
    """Every numeric value of the typed ``sections`` (audio, data, train, eval) in its domain
    (:data:`DOMAINS`); a ConfigError names the first key out of it and its value."""
    for key, (check, what) in DOMAINS.items():
        section, *path = key.split(".")
        if section not in sections:
            continue
        value = sections[section]
        for part in path:
            value = getattr(value, part)
        if not check(value):
            raise ConfigError(f"key '{key}' = {value!r} must be {what}", key=key, file=file)
    ev = sections.get("eval")
    if ev is not None and ev.segment * (1 - ev.overlap) < MIN_EVAL_SEGMENT:
        # the hop between chunks: a smaller one runs the model once per few samples (a hang)
        raise ConfigError(f"key 'eval.overlap' = {ev.overlap!r} with eval.segment = "
                          f"{ev.segment!r} moves chunks by {ev.segment * (1 - ev.overlap):.3g} s; "
                          f"segment * (1 - overlap) must be >= {MIN_EVAL_SEGMENT} s",
                          key="eval.overlap", file=file)
    augment = sections["data"].augment if "data" in sections else None
    if augment is not None and augment.gain_min > augment.gain_max:
        raise ConfigError(f"key 'data.augment.gain_min' = {augment.gain_min!r} must be <= "
                          f"data.augment.gain_max = {augment.gain_max!r}",
                          key="data.augment.gain_min", file=file)


def _check_audio(audio: AudioConfig, data: DataConfig, file: str | None) -> None:
    """The audio block on its own and against the data layout (model-specific limits, e.g. a
    model that only estimates vocals, are checked when the model is built)."""
    if data.layout not in ("musdb", "folders"):
        raise ConfigError(f"data.layout must be 'musdb' or 'folders', got {data.layout!r}",
                          key="data.layout", file=file)
    if data.layout == "folders" and not data.mapping:
        raise ConfigError("data.layout='folders' needs data.mapping (a stem -> class YAML)",
                          key="data.mapping", file=file)
    if audio.channels not in (1, 2):
        raise ConfigError(f"audio.channels must be 1 or 2, got {audio.channels}",
                          key="audio.channels", file=file)
    sources = list(audio.sources)
    if not sources or len(set(sources)) != len(sources):
        raise ConfigError(f"audio.sources = {sources} must name at least one source, each once",
                          key="audio.sources", file=file)
    valid_targets = set(STEMS) | {ACCOMPANIMENT}
    for t in sources:  # a folder dataset's classes are only known once its mapping is read
        if data.layout == "musdb" and t not in valid_targets:
            raise ConfigError(f"unknown source {t!r} in audio.sources; choose from "
                              f"{sorted(valid_targets)}", key="audio.sources", file=file)


EVAL_PROTOCOLS = ("sisec", "model")
BSSEVAL_VERSIONS = ("v4", "v3")
METRICS_DEVICES = ("auto", "cpu", "cuda")
EVAL_CHOICES = {"protocol": EVAL_PROTOCOLS, "bsseval": BSSEVAL_VERSIONS,
                "metrics_device": METRICS_DEVICES}


def _check_eval(ev: EvalConfig, file: str | None) -> None:
    for key, choices in EVAL_CHOICES.items():
        value = getattr(ev, key)
        if value not in choices:
            raise ConfigError(f"eval.{key} must be one of {', '.join(choices)}, got {value!r}",
                              key=f"eval.{key}", file=file)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config file, apply dotlist ``overrides`` and validate it."""
    path = Path(path)
    if not path.is_file():
        packaged = Path(__file__).parent / "configs" / path
        if packaged.is_file():
            path = packaged
        else:
            raise ConfigError(f"config file not found: {path}", file=str(path))
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml errors come in several types
        raise ConfigError(f"cannot parse YAML: {exc}", file=str(path)) from None
    if overrides:
        node = apply_overrides(node, overrides, file=str(path))
    return config_from_dict(node, file=str(path))


def apply_overrides(node: DictConfig, overrides: list[str] | tuple[str, ...],
                    file: str | None = None, error: type[ConfigError] = ConfigError,
                    sections: tuple[str, ...] | None = None) -> DictConfig:
    """``node`` merged with ``key=value`` dotlist overrides (``train.epochs=3``).

    Each override must have the form ``key=value`` and, when ``sections`` is given, start with
    one of them; otherwise ``error`` names it. A key absent from the schema is reported when the
    result is typed (:func:`typed`).
    """
    for item in overrides:
        if "=" not in item:
            raise error(f"override {item!r} is not of the form key=value", key=item, file=file)
        key = item.split("=", 1)[0]
        if sections is not None and key.split(".")[0] not in sections:
            raise error(f"override {item!r} must start with one of {list(sections)}", key=key,
                        file=file)
    try:
        return OmegaConf.merge(node, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        msg = str(getattr(exc, "msg", None) or exc).splitlines()[0]
        raise error(f"bad override: {msg}", file=file) from None
