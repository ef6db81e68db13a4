"""Search spaces: a sweep's parameters as an Optuna define-by-run space or a Tune param space.

- ``optuna``: a define-by-run function (Ray Tune's OptunaSearch rejects ``tune.grid_search``),
  so a conditional parameter is only suggested when its condition holds and TPE never sees a
  meaningless value. ``grid`` parameters become categorical.
- ``grid`` / ``random``: Tune's variant generator. The deduplicated grid points (conditional values
  pruned, see :func:`sweeps.spec.grid_points`) are one ``tune.grid_search`` over mappings, so the
  grid holds no two trials that differ only in a parameter that does not apply to them; the other
  parameters are sampled (conditional ones only where their condition holds on the grid point).

A trial's config is flat: ``{"model.num_bands": 2, ...}`` plus, in grid mode, ``"_grid": {...}``;
:func:`trial_params` turns either form into the dotted parameters of the trial.
"""

from __future__ import annotations

import random
from typing import Any

from ray import tune

from sweeps.errors import SweepError
from sweeps.spec import Param, Sweep, grid_points

GRID_KEY = "_grid"


def ordered(params: list[Param]) -> list[Param]:
    """Parameters ordered so that every condition's parameters come first."""
    done: list[Param] = []
    names: set[str] = set()
    pending = list(params)
    while pending:
        ready = [p for p in pending if set(p.when) <= names]
        if not ready:
            cycle = ", ".join(p.path for p in pending)
            raise SweepError(f"circular 'when' conditions between {cycle}", key="search")
        for p in ready:
            done.append(p)
            names.add(p.path)
            pending.remove(p)
    return done


class OptunaSpace:
    """Define-by-run space for ``OptunaSearch(space=...)`` (a class: Tune pickles its searcher)."""

    def __init__(self, params: list[Param], seeds: list[int]):
        self.params = ordered(params)
        self.seeds = list(seeds)

    def __call__(self, trial) -> None:
        chosen: dict[str, Any] = {}
        for p in self.params:
            if not p.applies(chosen):
                continue
            if p.kind in ("grid", "choice"):
                value = trial.suggest_categorical(p.path, p.values)
            elif p.kind == "uniform":
                value = trial.suggest_float(p.path, p.values[0], p.values[1])
            elif p.kind == "loguniform":
                value = trial.suggest_float(p.path, p.values[0], p.values[1], log=True)
            elif p.kind == "randint":
                value = trial.suggest_int(p.path, p.values[0], p.values[1] - 1)
            else:  # quniform
                value = trial.suggest_float(p.path, p.values[0], p.values[1], step=p.values[2])
            chosen[p.path] = value
        if self.seeds:
            trial.suggest_categorical("train.seed", self.seeds)


def optuna_space(sweep: Sweep) -> OptunaSpace:
    return OptunaSpace(sweep.params, sweep.tune.seeds)


def _sampler(p: Param):
    low, high = p.values[0], p.values[1]
    if p.kind == "choice":
        return lambda rng: rng.choice(p.values)
    if p.kind == "uniform":
        return lambda rng: rng.uniform(low, high)
    if p.kind == "loguniform":
        import math

        return lambda rng: math.exp(rng.uniform(math.log(low), math.log(high)))
    if p.kind == "randint":
        return lambda rng: rng.randrange(low, high)
    q = p.values[2]
    return lambda rng: round(rng.uniform(low, high) / q) * q


def basic_space(sweep: Sweep, stream: int = 0) -> dict[str, Any]:
    """Param space for Tune's variant generator (``search_alg: grid`` or ``random``).

    ``stream``: 0 for a sweep's own run; an extension ``k`` (``sweeps extend``) draws its random
    values from another seeded stream, so it does not repeat the run's first draws."""
    grid_names = {p.path for p in sweep.grid}
    space: dict[str, Any] = {}
    points = grid_points(sweep.params)
    if sweep.tune.seeds:
        points = [{**pt, "train.seed": s} for pt in points for s in sweep.tune.seeds]
    if sweep.grid or sweep.tune.seeds:
        space[GRID_KEY] = tune.grid_search(points)
    rng = random.Random(sweep.tune.seed if not stream else f"{sweep.tune.seed}/{stream}")
    for p in sweep.params:
        if p.kind == "grid":
            continue
        bad = set(p.when) - grid_names
        if bad:
            raise SweepError(f"with search_alg {sweep.tune.search_alg!r} a 'when' condition may "
                             f"only refer to grid parameters (not {sorted(bad)}); use optuna",
                             key=f"search.{p.path}.when", file=sweep.file)
        sample = _sampler(p)
        if p.when:
            space[p.path] = tune.sample_from(
                lambda spec, p=p, sample=sample: sample(rng) if p.applies(
                    dict(spec.config.get(GRID_KEY) or {})) else None)
        else:
            space[p.path] = tune.sample_from(lambda spec, sample=sample: sample(rng))
    return space


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's Tune config → its dotted parameters (``None`` = not applicable, dropped)."""
    params = dict(config.get(GRID_KEY) or {})
    params.update({k: v for k, v in config.items() if k != GRID_KEY})
    return {k: v for k, v in params.items() if v is not None}
