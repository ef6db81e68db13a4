"""Config values at and past each domain's edge, through ``sep info`` (the config is built as
for ``sep train``) and through sweep validation (a searched ``choice``), which must agree.

Contract: a value inside its domain builds (exit 0 / the sweep loads); one outside is refused
with one line naming the key (exit 2 / a SweepError); junk text gets one or the other, never a
traceback. Several overrides at once: the contract only."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepcore.cli import main
from sepcore.config import DOMAINS
from tests.robustness.contract import ContractBroken, cli_case, judge_call
from tests.robustness.edges import BASE_YAML, EDGES, JUNK

KEYS = sorted(EDGES)
PROFILE = settings.get_profile("robustness")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(BASE_YAML)
    return path


def test_every_domain_has_its_edges():
    assert sorted(DOMAINS) == KEYS


def _info_ok(result):
    info = json.loads(result.out)
    assert info["model"] == "multiband" and info["params"] > 0, info


def _sep_info(config_file, overrides, names, expect):
    argv = ["info", str(config_file), *overrides, "--json"]
    outcome = cli_case("sep info: config values at domain edges", main, argv, names, _info_ok)
    if expect is not None and outcome != expect:
        raise ContractBroken(f"{overrides}: expected {expect}, got {outcome}")


@settings(PROFILE, max_examples=60)
@given(key=st.sampled_from(KEYS), data=st.data())
def test_one_value_at_a_domain_edge(config_file, key, data):
    inside, outside = EDGES[key]
    side = data.draw(st.sampled_from(["inside", "outside", "junk"]), label="side")
    value = data.draw(st.sampled_from({"inside": inside, "outside": outside, "junk": JUNK}[side]),
                      label="value")
    expect = {"inside": "correct", "outside": "clear_error", "junk": None}[side]
    _sep_info(config_file, [f"{key}={value}"], (key,), expect)


@settings(PROFILE, max_examples=25)
@given(items=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(
    sorted({v for pair in EDGES.values() for vs in pair for v in vs} | set(JUNK)))),
    min_size=2, max_size=4, unique_by=lambda kv: kv[0]))
def test_several_values_at_once(config_file, items):
    _sep_info(config_file, [f"{k}={v}" for k, v in items], tuple(k for k, _ in items), None)


# --- the same edges in sweep validation ------------------------------------------------------


def _sweep_text(key: str, value: str) -> str:
    base = "\n".join("  " + line for line in BASE_YAML.splitlines())
    return (f"base:\n{base}\nsearch:\n  {key}: {{choice: [{value}]}}\n"
            "tune: {metric: valid_sisdr, mode: max, num_samples: 1, search_alg: random}\n")


@settings(PROFILE, max_examples=30)
@given(key=st.sampled_from(KEYS), data=st.data())
def test_sweep_validation_refuses_the_same_values(tmp_path_factory, key, data):
    from sweeps.errors import SweepError
    from sweeps.spec import load_sweep

    inside, outside = EDGES[key]
    side = data.draw(st.sampled_from(["inside", "outside"]), label="side")
    value = data.draw(st.sampled_from(inside if side == "inside" else outside), label="value")
    path = tmp_path_factory.mktemp("sweep") / "s.yaml"
    path.write_text(_sweep_text(key, value))

    def check(sweep):
        assert [p.path for p in sweep.params] == [key]
        sweep.config_for({key: sweep.params[0].values[0]})  # the trial's config builds

    outcome = judge_call("sweep validation: searched values at domain edges",
                         lambda: load_sweep(path), (SweepError,), (f"search.{key}",), check)
    assert outcome == ("correct" if side == "inside" else "clear_error"), (key, value)
