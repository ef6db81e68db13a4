"""Sweep files: parse, merge a profile and overrides, validate before any trial starts.

A sweep file (``sweeps/*.yaml``, the README's "Sweeps" section) has these blocks::

    requires: null            # optional: a model this file needs that is not built yet (message)
    base: demo.yaml           # a sepcore config (packaged name or path) or an inline mapping
    search:                   # dotted config path -> one distribution
      model.num_bands: {grid: [1, 2, 4]}
      train.lr: {loguniform: [1.0e-4, 3.0e-3]}
      model.fb_ratio: {uniform: [0.1, 0.9], when: {model.encoder.kind: hybrid}}
    tune: {metric: valid_sisdr, mode: max, num_samples: 1, search_alg: optuna, ...}
    tracking: {uri: null, experiment: null}
    artifacts: {uri: null, top_k: 1}
    registry: {model_name: null, promote: true}
    profiles: {smoke: {...}, paper: {...}}   # named partial sweep files merged on top

Paper tables: the reserved search key ``row`` is a grid of whole configurations, one per row of a
paper's table, each a mapping with an ``id``, the config sections it sets (``model``, ``audio``,
``data``, ``train``, ``eval``; a ``model`` that names its ``name`` replaces the base model instead
of merging into it) and optionally ``published``: the paper's numbers for that row, as report
columns (``test_vocals_SDR: 5.81``...) plus ``source`` (the table). ``published`` is kept out of
the trial's config; ``python -m sweeps report`` prints it beside the measured values. A row whose
``train.init_from`` is ``row:<id>`` starts from the best checkpoint of row ``<id>`` of the same
sweep: the runner trains the rows it depends on first (stage 1), then the dependent rows (stage 2).

Distributions: ``grid`` and ``choice`` (lists), ``uniform``/``loguniform`` ([low, high]),
``randint`` ([low, high), high exclusive as in Tune), ``quniform`` ([low, high, q]). ``when``
makes a parameter conditional: it only exists for trials whose other parameters match, so a grid
never holds two trials that differ only in a parameter that does not apply to them.

Every error is a :class:`~sweeps.errors.SweepError` naming the file and the dotted key at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sepcore.config import ExperimentConfig, apply_overrides, config_from_dict, typed
from sepcore.errors import ConfigError
from sweeps.errors import SweepError

KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")
BLOCKS = ("requires", "base", "search", "tune", "tracking", "artifacts", "registry", "profiles")
SEARCH_ALGS = ("optuna", "grid", "random")
SCHEDULERS = ("asha", "fifo")
ROW = "row"  # the search key of paper-table rows (whole configurations, see the module docstring)
ROW_REF = "row:"  # train.init_from prefix: the best checkpoint of another row of the sweep
ROW_KEYS = ("id", "published", "model", "audio", "data", "train", "eval")


# --- typed blocks ---------------------------------------------------------------------------------


@dataclass
class SchedulerSpec:
    type: str = "asha"  # asha | fifo
    grace_period: int = 1  # epochs every trial runs before it can be stopped
    reduction_factor: float = 2.0
    max_t: int | None = None  # epochs (None = the base config's train.epochs)


@dataclass
class ResourcesSpec:
    cpu: float = 1.0
    gpu: float = 0.0  # fractions allowed (0.5 = two trials per GPU; memory is not partitioned)


@dataclass
class TuneSpec:
    metric: str = "valid_sisdr"
    mode: str = "max"
    num_samples: int = 1  # Optuna/random: number of trials; grid: repeats of every grid point
    search_alg: str = "optuna"  # optuna (TPE) | grid | random
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # train.seed repeats (the report's spread)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    max_concurrent: int = 2
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_failures: int = 2
    num_to_keep: int = 2  # a trial's best checkpoints kept (by the sweep metric), plus its latest
    storage_path: str = "runs/sweeps"  # a local folder or s3://bucket/prefix (shared storage)
    name: str | None = None  # experiment name (None = the sweep file's stem)
    test_eval: bool = True  # BSSEval the finished trials' best checkpoints on the test subset
    test_max_tracks: int | None = None
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)  # Optuna warm start
    # an RDB URL (sqlite:///optuna.db, postgresql://host/db) where the Optuna study of each run is
    # kept, named after the Tune experiment: `optuna-dashboard URL` shows it (None = in memory)
    optuna_storage: str | None = None


@dataclass
class TrackingSpec:
    uri: str | None = None  # None = $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db
    experiment: str | None = None  # None = the sweep name


@dataclass
class ArtifactsSpec:
    uri: str | None = None  # None = ./mlartifacts/store; s3://bucket/prefix through boto3
    top_k: int = 1  # best trials whose checkpoints are pushed


@dataclass
class RegistrySpec:
    model_name: str | None = None  # None = sepcore-<sweep name>
    register: bool = True
    promote: bool = True  # move alias champion when the new model beats the current one


@dataclass
class Param:
    """One searched parameter: dotted config path, distribution and optional condition."""

    path: str
    kind: str
    values: list[Any]  # grid/choice values, or the numeric arguments
    when: dict[str, list[Any]] = field(default_factory=dict)

    def applies(self, params: dict[str, Any]) -> bool:
        return all(params.get(k) in allowed for k, allowed in self.when.items())


@dataclass
class Sweep:
    """A resolved, validated sweep file."""

    file: str
    name: str
    profile: str | None
    base: dict[str, Any]  # the full sepcore config as a plain mapping
    params: list[Param]
    tune: TuneSpec
    tracking: TrackingSpec
    artifacts: ArtifactsSpec
    registry: RegistrySpec
    digest: str  # SHA-256 of the resolved sweep (file + profile + overrides)
    raw: dict[str, Any] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)  # row id -> paper numbers

    @property
    def grid(self) -> list[Param]:
        return [p for p in self.params if p.kind == "grid"]

    def config_for(self, params: dict[str, Any]) -> ExperimentConfig:
        """The typed sepcore config of one trial (base + the trial's parameters)."""
        return build_trial_config(self.base, params, self.file)

    @property
    def model_name(self) -> str:
        return self.registry.model_name or f"sepcore-{self.name}"

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


# --- loading --------------------------------------------------------------------------------------


def load_sweep(path: str | Path, profile: str | None = None,
               overrides: list[str] | None = None) -> Sweep:
    """Read ``path``, merge ``profiles[profile]`` and dotlist ``overrides``, validate everything."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}", file=file)
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml raises several types
        raise SweepError(f"cannot parse YAML: {exc}", file=file) from None
    if not isinstance(node, DictConfig):
        raise SweepError("a sweep file must be a mapping of blocks", file=file)
    _check_keys(node, BLOCKS, "", file)
    if node.get("requires"):
        raise SweepError(f"this sweep needs {node.requires}, which is not built yet; see the "
                         f"comment at the top of the file", key="requires", file=file)
    if "base" not in node:
        raise SweepError("missing 'base' (a sepcore config file or mapping)", key="base", file=file)

    base = _resolve_base(node.base, path, file)
    node["base"] = base
    profiles = node.get("profiles") or {}
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(profiles) or "none"
            raise SweepError(f"unknown profile {profile!r} (this file has: {known})",
                             key=f"profiles.{profile}", file=file)
        chosen = profiles[profile]
        _check_keys(chosen, BLOCKS[1:-1], f"profiles.{profile}.", file)
        node = OmegaConf.merge(node, chosen)
    if overrides:
        node = apply_overrides(node, overrides, file=file, error=SweepError,
                               sections=BLOCKS[1:-1])

    tune_spec = _typed(TuneSpec, node.get("tune"), "tune", file)
    sweep = Sweep(
        file=file,
        name=tune_spec.name or path.stem,
        profile=profile,
        base=OmegaConf.to_container(node.base, resolve=True),
        params=_parse_search(node.get("search") or OmegaConf.create({}), file),
        published={},
        tune=tune_spec,
        tracking=_typed(TrackingSpec, node.get("tracking"), "tracking", file),
        artifacts=_typed(ArtifactsSpec, node.get("artifacts"), "artifacts", file),
        registry=_typed(RegistrySpec, node.get("registry"), "registry", file),
        digest="",
        raw={},
    )
    sweep.published = _split_published(sweep.params, file)
    raw = OmegaConf.to_container(node, resolve=True)
    raw.pop("profiles", None)
    sweep.raw = raw
    sweep.digest = hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(raw)).encode()).hexdigest()
    validate(sweep)
    return sweep


def _check_keys(node: Any, allowed: tuple[str, ...], prefix: str, file: str) -> None:
    if not isinstance(node, DictConfig):
        raise SweepError(f"'{prefix.rstrip('.') or 'sweep'}' must be a mapping", file=file,
                         key=prefix.rstrip(".") or None)
    for key in node.keys():
        if key not in allowed:
            raise SweepError(f"unknown key '{prefix}{key}' (expected one of {list(allowed)})",
                             key=f"{prefix}{key}", file=file)


def _resolve_base(base: Any, sweep_path: Path, file: str) -> DictConfig:
    if isinstance(base, DictConfig):
        return base
    if not isinstance(base, str):
        raise SweepError("'base' must be a config file name or a mapping", key="base", file=file)
    import sepcore

    packaged = Path(sepcore.__file__).resolve().parent / "configs" / base
    candidates = [packaged, Path(base), sweep_path.parent / base]
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve() != sweep_path.resolve():
            try:
                return OmegaConf.load(candidate)
            except Exception as exc:
                raise SweepError(f"cannot parse base config {candidate}: {exc}", key="base",
                                 file=file) from None
    raise SweepError(f"base config {base!r} not found (looked in sepcore/configs, the working "
                     f"directory and next to the sweep file)", key="base", file=file)


def _typed(cls: type, values: Any, block: str, file: str):
    return typed(cls, values, block, file, error=SweepError)


def _parse_search(search: Any, file: str) -> list[Param]:
    if not isinstance(search, DictConfig):
        raise SweepError("'search' must map config paths to distributions", key="search",
                         file=file)
    params = []
    for path, spec in _flatten_search(search):
        key = f"search.{path}"
        if not isinstance(spec, DictConfig):
            raise SweepError(f"'{key}' must be a distribution such as {{choice: [...]}}",
                             key=key, file=file)
        kinds = [k for k in spec.keys() if k != "when"]
        if len(kinds) != 1 or kinds[0] not in KINDS:
            raise SweepError(f"'{key}' needs exactly one distribution among {list(KINDS)} "
                             f"(got {kinds})", key=key, file=file)
        kind = kinds[0]
        values = spec[kind]
        values = OmegaConf.to_container(values, resolve=True) if isinstance(
            values, ListConfig | DictConfig) else values
        when = {}
        if "when" in spec:
            if not isinstance(spec.when, DictConfig):
                raise SweepError(f"'{key}.when' must map parameters to values", key=f"{key}.when",
                                 file=file)
            for other, allowed in OmegaConf.to_container(spec.when, resolve=True).items():
                when[other] = list(allowed) if isinstance(allowed, list) else [allowed]
        params.append(Param(path=path, kind=kind, values=_check_values(kind, values, key, file),
                            when=when))
    for p in params:
        if p.path == ROW:
            _check_rows(p, file)
    names = {p.path for p in params}
    if len(names) != len(params):
        twice = sorted({p.path for p in params if [q.path for q in params].count(p.path) > 1})
        raise SweepError(f"'search.{twice[0]}' is given twice (flat and nested)",
                         key=f"search.{twice[0]}", file=file)
    for p in params:
        for other in p.when:
            if other not in names:
                raise SweepError(f"'search.{p.path}.when' refers to {other!r}, which is not a "
                                 f"searched parameter", key=f"search.{p.path}.when", file=file)
            if other == p.path:
                raise SweepError("a parameter cannot depend on itself", key=f"search.{p.path}",
                                 file=file)
    return params


def _check_rows(param: Param, file: str) -> None:
    key = f"search.{ROW}"
    if param.kind != "grid" or param.when:
        raise SweepError(f"'{key}' must be a plain grid of rows ({{grid: [{{id: ..., model: ...}}, "
                         f"...]}})", key=key, file=file)
    ids = []
    for number, row in enumerate(param.values):
        where = f"{key}.grid[{number}]"
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not row["id"]:
            raise SweepError(f"'{where}' must be a mapping with an 'id' (a row name such as M1)",
                             key=where, file=file)
        unknown = sorted(set(row) - set(ROW_KEYS))
        if unknown:
            raise SweepError(f"'{where}.{unknown[0]}': row {row['id']} has an unknown key "
                             f"(expected one of {list(ROW_KEYS)})", key=f"{where}.{unknown[0]}",
                             file=file)
        for section in ROW_KEYS[1:]:
            if section in row and not isinstance(row[section], dict):
                raise SweepError(f"'{where}.{section}' (row {row['id']}) must be a mapping",
                                 key=f"{where}.{section}", file=file)
        for name, value in (row.get("published") or {}).items():
            if name != "source" and (isinstance(value, bool)
                                     or not isinstance(value, int | float)):
                raise SweepError(f"'{where}.published.{name}' = {value!r} (row {row['id']}) must "
                                 f"be a number", key=f"{where}.published.{name}", file=file)
        ids.append(row["id"])
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise SweepError(f"'{key}': row id {twice[0]!r} is given twice", key=key, file=file)
    for row in param.values:
        ref = row_dependency(row)
        if ref is None:
            continue
        target = next((r for r in param.values if r["id"] == ref), None)
        if target is None or row_dependency(target) is not None:
            where = f"{key}.{row['id']}.train.init_from"
            raise SweepError(f"'{where}' = {ROW_REF}{ref} is not a row of this sweep that trains "
                             f"from scratch (rows: {', '.join(ids)})", key=where, file=file)


def row_dependency(row: dict[str, Any]) -> str | None:
    """The id of the row whose checkpoint ``row`` starts from (``train.init_from: row:<id>``)."""
    init = (row.get("train") or {}).get("init_from")
    if isinstance(init, str) and init.startswith(ROW_REF):
        return init[len(ROW_REF):]
    return None


def split_stages(sweep: Sweep) -> tuple[Sweep, Sweep | None]:
    """(the rows that train from scratch, the rows that start from another row's checkpoint).

    The second is ``None`` when no row depends on another: the sweep runs in one stage.
    """
    row = next((p for p in sweep.params if p.path == ROW), None)
    if row is None or not any(row_dependency(v) for v in row.values):
        return sweep, None

    def only(values):
        param = dataclasses.replace(row, values=values)
        return dataclasses.replace(sweep, params=[param if p is row else p
                                                  for p in sweep.params])

    return (only([v for v in row.values if row_dependency(v) is None]),
            only([v for v in row.values if row_dependency(v) is not None]))


def with_row_checkpoints(sweep: Sweep, checkpoints: dict[str, str]) -> Sweep:
    """``sweep`` with each ``train.init_from: row:<id>`` replaced by ``checkpoints[id]``."""
    def resolved(key, value):
        ref = row_dependency({"train": {"init_from": value}})
        return value if ref is None else checkpoints[ref]

    return map_train_values(sweep, "init_from", resolved)


def map_train_values(sweep: Sweep, name: str, change) -> Sweep:
    """``sweep`` with ``change(key, value)`` in place of every value ``train.<name>`` takes: in
    the base, in each paper-table row and among the searched values (of ``train.<name>`` or of
    a whole ``train`` mapping); ``key`` is the dotted key the value comes from. Unset values are
    left alone."""
    def train(section, key):
        value = (section or {}).get(name)
        if not isinstance(section, dict) or value is None:
            return section
        return {**section, name: change(f"{key}.{name}", value)}

    def values(p: Param) -> list[Any]:
        if p.path == ROW:
            return [{**row, "train": train(row["train"], f"search.{ROW}.{row['id']}.train")}
                    if "train" in row else row for row in p.values]
        if p.kind not in ("grid", "choice"):
            return p.values
        if p.path == "train":
            return [train(v, "search.train") for v in p.values]
        if p.path == f"train.{name}":
            return [v if v is None else change(f"search.{p.path}", v) for v in p.values]
        return p.values

    base = {**sweep.base, "train": train(sweep.base.get("train"), "base.train")} \
        if "train" in sweep.base else sweep.base
    return dataclasses.replace(sweep, base=base, params=[
        dataclasses.replace(p, values=values(p)) for p in sweep.params])


def _split_published(params: list[Param], file: str) -> dict[str, dict[str, Any]]:
    """Move each row's ``published`` numbers out of the trial values (they are no config)."""
    published = {}
    for p in params:
        if p.path != ROW:
            continue
        for row in p.values:
            numbers = row.pop("published", None)
            if numbers:
                published[row["id"]] = numbers
    return published


def _flatten_search(node: DictConfig, prefix: str = ""):
    """Yield (dotted path, distribution); nested mappings without a distribution key recurse."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, DictConfig) and len(value) and not (set(value.keys()) & set(KINDS)) \
                and "when" not in value and all(isinstance(v, DictConfig) for v in value.values()):
            yield from _flatten_search(value, path + ".")
        else:
            yield path, value


def _check_values(kind: str, values: Any, key: str, file: str) -> list[Any]:
    def fail(msg: str):
        raise SweepError(f"'{key}.{kind}': {kind} {msg}", key=f"{key}.{kind}", file=file)

    if not isinstance(values, list):
        fail(f"needs a list, got {values!r}")
    if kind in ("grid", "choice"):
        if not values:
            fail("is empty")
        if len({repr(v) for v in values}) != len(values):
            fail(f"has duplicate values {values}")
        return values
    expected = 3 if kind == "quniform" else 2
    if len(values) != expected or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                          for v in values):
        fail(f"needs {expected} numbers, got {values}")
    low, high = values[0], values[1]
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        fail(f"needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        fail(f"needs low > 0, got {low}")
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        fail(f"needs integer bounds, got {values}")
    if kind == "quniform" and (values[2] <= 0 or values[2] > high - low):
        fail(f"needs 0 < q <= high - low, got q={values[2]}")
    return values


# --- trial configs and validation ----------------------------------------------------------------


def build_trial_config(base: dict[str, Any], params: dict[str, Any],
                       file: str | None = None) -> ExperimentConfig:
    """Merge a trial's dotted ``params`` (``None`` values = not applicable) into ``base``."""
    node = OmegaConf.create(base)
    dotlist = {k: v for k, v in params.items() if v is not None and not k.startswith("_")}
    row = dotlist.pop(ROW, None)
    for section, value in (row or {}).items():
        if section in ("id", "published"):
            continue
        # a row's model that names its model is a whole model (M1 is a convtasnet, M2 multiband)
        whole = section == "model" and "name" in value
        OmegaConf.update(node, section, value, merge=not whole, force_add=True)
    for key, value in dotlist.items():
        OmegaConf.update(node, key, value, merge=True, force_add=True)
    return config_from_dict(node, file=file)


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """The distinct grid points: the product of grid values with inapplicable values removed.

    Parameters whose ``when`` does not hold are dropped from a point, so two points never differ
    only in a parameter that does not apply.
    """
    grid = [p for p in params if p.kind == "grid"]
    points, seen = [], set()
    for combo in itertools.product(*[p.values for p in grid]):
        point = dict(zip([p.path for p in grid], combo, strict=True))
        point = _prune(point, grid)
        marker = repr(sorted(point.items(), key=lambda kv: kv[0]))
        if marker not in seen:
            seen.add(marker)
            points.append(point)
    return points


def _prune(point: dict[str, Any], params: list[Param]) -> dict[str, Any]:
    """Drop parameters whose condition fails, until stable (conditions can chain)."""
    by_path = {p.path: p for p in params}
    changed = True
    while changed:
        changed = False
        for path in list(point):
            param = by_path.get(path)
            if param is not None and not param.applies(point):
                del point[path]
                changed = True
    return point


def reported_metrics(sources: list[str]) -> set[str]:
    """Metric names the trainable reports every epoch: sepcore.train's one definition."""
    from sepcore.train import epoch_metric_names

    return set(epoch_metric_names(sources))


def _check_optuna_storage(t: TuneSpec, file: str) -> None:
    from urllib.parse import urlsplit

    key = "tune.optuna_storage"
    if t.search_alg != "optuna":
        raise SweepError(f"'{key}' needs search_alg 'optuna' (got {t.search_alg!r})", key=key,
                         file=file)
    if "://" not in t.optuna_storage:
        raise SweepError(f"'{key}' must be a database URL such as sqlite:///optuna.db or "
                         f"postgresql://host/db, got {t.optuna_storage!r}", key=key, file=file)
    if urlsplit(t.optuna_storage).password is not None:  # the value is not echoed
        raise SweepError(f"'{key}' holds a password, which Tune would save in its experiment "
                         f"state: give it through PGPASSWORD or ~/.pgpass instead", key=key,
                         file=file)


def _check_gpus(sweep: Sweep) -> None:
    """Ray hands out whole GPUs or fractions of one; a trial without one cannot train on CUDA
    (it would fail, and be retried ``tune.max_failures`` times)."""
    key, gpu = "tune.resources.gpu", sweep.tune.resources.gpu
    if gpu > 1 and not float(gpu).is_integer():
        raise SweepError(f"'{key}' = {gpu:g} must be a fraction below 1 (trials share one GPU) "
                         f"or a whole number of GPUs", key=key, file=sweep.file)
    if gpu > 0:
        return
    seen: list[tuple[str, Any]] = []
    map_train_values(sweep, "device", lambda where, value: seen.append((where, value)) or value)
    cuda = [(where, value) for where, value in seen if str(value).startswith("cuda")]
    if cuda:
        where, value = cuda[0]
        profile = f" (profile {sweep.profile})" if sweep.profile else ""
        raise SweepError(f"'{where}' = {value!r} needs a GPU, but '{key}' is 0{profile}: Ray "
                         f"gives the trials none; set {key} (1, or 0.5 for two trials per GPU) "
                         f"or train.device=auto", key=where, file=sweep.file)


def validate(sweep: Sweep) -> None:
    """Everything that can be checked before a trial starts; raises SweepError naming the key."""
    file = sweep.file
    t = sweep.tune
    try:
        base_cfg = config_from_dict(OmegaConf.create(sweep.base))
    except ConfigError as exc:
        raise SweepError(f"base config does not build: {exc}", key=f"base.{exc.key or ''}"
                         .rstrip("."), file=file) from None
    checks = [
        (t.mode in ("max", "min"), "tune.mode", f"must be max or min, got {t.mode!r}"),
        (t.search_alg in SEARCH_ALGS, "tune.search_alg",
         f"must be one of {list(SEARCH_ALGS)}, got {t.search_alg!r}"),
        (t.scheduler.type in SCHEDULERS, "tune.scheduler.type",
         f"must be one of {list(SCHEDULERS)}, got {t.scheduler.type!r}"),
        (t.num_samples >= 1, "tune.num_samples", f"must be >= 1, got {t.num_samples}"),
        (t.max_concurrent >= 1, "tune.max_concurrent", f"must be >= 1, got {t.max_concurrent}"),
        (t.max_failures >= 0, "tune.max_failures", f"must be >= 0, got {t.max_failures}"),
        (t.num_to_keep >= 1, "tune.num_to_keep", f"must be >= 1, got {t.num_to_keep}"),
        (t.resources.cpu > 0, "tune.resources.cpu", f"must be > 0, got {t.resources.cpu}"),
        (t.resources.gpu >= 0, "tune.resources.gpu", f"must be >= 0, got {t.resources.gpu}"),
        (t.scheduler.grace_period >= 1, "tune.scheduler.grace_period",
         f"must be >= 1, got {t.scheduler.grace_period}"),
        (t.scheduler.reduction_factor > 1, "tune.scheduler.reduction_factor",
         f"must be > 1, got {t.scheduler.reduction_factor}"),
        (sweep.artifacts.top_k >= 1, "artifacts.top_k",
         f"must be >= 1, got {sweep.artifacts.top_k}"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise SweepError(f"'{key}' {msg}", key=key, file=file)
    _check_gpus(sweep)
    if t.optuna_storage:
        _check_optuna_storage(t, file)
    metrics = reported_metrics(list(base_cfg.audio.sources))
    if t.metric not in metrics:
        raise SweepError(f"'tune.metric' = {t.metric!r} is never reported by the trainable; it "
                         f"reports {sorted(metrics)}", key="tune.metric", file=file)
    if t.search_alg == "optuna" and any(p.path == ROW for p in sweep.params):
        raise SweepError("'tune.search_alg' = 'optuna' cannot search paper-table rows (whole "
                         "configurations); use grid or random", key="tune.search_alg", file=file)
    if t.search_alg == "grid":
        continuous = [p.path for p in sweep.params if p.kind not in ("grid", "choice")]
        if not sweep.grid and not continuous:
            raise SweepError("search_alg 'grid' needs at least one grid parameter",
                             key="search", file=file)
    # every discrete value must give a config that builds; continuous ones at their bounds
    for param in sweep.params:
        samples = param.values if param.kind in ("grid", "choice") else param.values[:2]
        for value in samples:
            if param.kind == "randint":
                value = min(value, param.values[1] - 1)
            context = {other: allowed[0] for other, allowed in param.when.items()}
            key = f"search.{param.path}"
            shown = f"{value!r}"
            if param.path == ROW:
                key, shown = f"search.{ROW}.{value['id']}", f"row {value['id']}"
            try:
                cfg = build_trial_config(sweep.base, {**context, param.path: value})
            except ConfigError as exc:
                raise SweepError(f"'search.{param.path}' = {shown} gives a config that does not "
                                 f"build: {exc}", key=key, file=file) from None
            if param.path in ("train", ROW) or param.path.startswith(_MODEL_PATHS):
                _build_model(cfg, key, file)
            if param.path == ROW:
                _check_published(sweep.published.get(value["id"], {}), cfg, value["id"], file)
    _build_model(base_cfg, "base", file)


PUBLISHED_METRICS = ("SDR", "SIR", "SAR", "ISR", "PES", "VAD", "SDR_mean", "SDR_median", "NSDR",
                     "GNSDR")  # the test metrics trials log (sweeps.trainable.log_test_metrics)


def _check_published(published: dict[str, Any], cfg: ExperimentConfig, row: str,
                     file: str) -> None:
    """A published number must name a column the report can put it beside."""
    known = {"source", "params"} | {f"test_{source}_{metric}" for source in cfg.audio.sources
                                    for metric in PUBLISHED_METRICS}
    for name in published:
        if name not in known:
            key = f"search.{ROW}.{row}.published.{name}"
            raise SweepError(f"'{key}': no trial of row {row} logs {name!r} (sources "
                             f"{list(cfg.audio.sources)}; use test_<source>_<metric>, params "
                             f"or source)", key=key, file=file)


# searched paths that need the model built: its config, or patterns over its parameter names
_MODEL_PATHS = ("model", "train.trainable", "train.frozen")


def _build_model(cfg: ExperimentConfig, key: str, file: str) -> None:
    """Build the model and match ``train.trainable``/``train.frozen`` against its parameters."""
    from sepcore.models import build_model
    from sepcore.train import trainable_parameters

    try:
        model = build_model(cfg.model_name, cfg.model)
    except ConfigError as exc:
        raise SweepError(f"'{key}': the model does not build: {exc}", key=key, file=file) from None
    try:
        trainable_parameters(model, cfg.train)
    except ConfigError as exc:
        raise SweepError(f"'{key}': {exc}", key=key, file=file) from None
