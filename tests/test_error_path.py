"""One error path for ``sep``, ``python -m sweeps`` and ``python -m services``
(sepcore.cli_errors): bad input is one ``error:`` line naming what is at fault (exit 2), a bug is
one line that says so and points at ``--debug`` (exit 1), ``--debug`` / ``SEPCORE_DEBUG=1`` add the
traceback, and credentials never reach stderr either way."""

from __future__ import annotations

import pytest

from sepcore.cli import main as sep_main
from services.__main__ import main as services_main
from sweeps.__main__ import main as sweeps_main

PASSWORD = "hunter2-never-print"
URI = f"http://alice:{PASSWORD}@tracking.example:5000/x"


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv("SEPCORE_DEBUG", raising=False)


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _bad_sweep(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {URI}/c.yaml\n")
    return path


# each CLI with a bad input (naming what is at fault) and a way to make one of its commands crash
CASES = {
    "sep": (sep_main, lambda tmp: ["info", str(tmp / "missing.yaml")], "missing.yaml",
            "sepcore.info.model_info", lambda tmp: ["info", "paper/m1.yaml"]),
    "sweeps": (sweeps_main, lambda tmp: ["run", str(_bad_sweep(tmp))], "base config",
               "sweeps.spec.load_sweep", lambda tmp: ["run", str(tmp / "any.yaml")]),
    "services": (services_main,
                 lambda tmp: ["stack", "up", "--workers", "0", "--state-dir", str(tmp / "st")],
                 "--workers", "services.stack.up",
                 lambda tmp: ["stack", "up", "--state-dir", str(tmp / "st")]),
}


@pytest.mark.parametrize("cli", CASES)
def test_bad_input_is_one_redacted_line_exit_2(cli, tmp_path, capsys):
    main, bad_argv, names, _, _ = CASES[cli]
    assert main(bad_argv(tmp_path)) == 2
    lines = _lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], lines
    assert PASSWORD not in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize("how", ["flag after", "flag before", "env"])
@pytest.mark.parametrize("cli", CASES)
def test_debug_adds_the_traceback(cli, how, tmp_path, capsys, monkeypatch):
    main, bad_argv, names, _, _ = CASES[cli]
    argv = bad_argv(tmp_path)
    if how == "flag after":
        argv = argv + ["--debug"]
    elif how == "flag before":
        argv = ["--debug"] + argv
    else:
        monkeypatch.setenv("SEPCORE_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):"), err
    assert err.strip().splitlines()[-1].startswith("error: ") and names in err
    assert PASSWORD not in err


@pytest.mark.parametrize("cli", CASES)
def test_a_bug_says_so_in_one_line_exit_1(cli, tmp_path, capsys, monkeypatch):
    main, _, _, target, argv = CASES[cli]

    def crash(*args, **kwargs):
        raise ZeroDivisionError(f"cannot divide\n  while talking to {URI}")

    monkeypatch.setattr(target, crash)
    assert main(argv(tmp_path)) == 1
    lines = _lines(capsys)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: ") and "unexpected ZeroDivisionError: cannot divide" in line
    assert "bug" in line and "--debug" in line and "SEPCORE_DEBUG=1" in line
    assert PASSWORD not in line and "tracking.example" in line
    monkeypatch.setenv("SEPCORE_DEBUG", "1")
    assert main(argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in crash" in err and PASSWORD not in err


@pytest.mark.parametrize("cli", CASES)
def test_argument_errors_are_one_line_exit_2(cli, capsys):
    main = CASES[cli][0]
    with pytest.raises(SystemExit) as exited:
        main(["--no-such-option"])
    assert exited.value.code == 2
    lines = _lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], lines


def test_sweep_errors_are_redacted_when_raised():
    from sweeps.errors import SweepError

    exc = SweepError(f"cannot reach {URI}", key="tracking.uri", file=f"{URI}/s.yaml")
    assert PASSWORD not in str(exc) and PASSWORD not in exc.file
    assert "tracking.example:5000" in str(exc) and exc.key == "tracking.uri"


def test_debug_env_values(monkeypatch):
    from sepcore.cli_errors import debug_enabled

    for value, on in [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)]:
        monkeypatch.setenv("SEPCORE_DEBUG", value)
        assert debug_enabled() is on, value
