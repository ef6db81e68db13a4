"""`python -m sweeps submit` (with a stand-in for Ray's JobSubmissionClient: what the job would
get) and `python -m sweeps resume` without a sweep state: the CLI's answers, no cluster needed."""

from __future__ import annotations

import logging

import pytest

from sweeps.__main__ import main
from tests.sweeps.conftest import tiny_sweep_text

SECRET = "sk-test-9c1f0e7d-never-print-me"


class FakeJobClient:
    """Records what ``submit`` hands to Ray's Job Submission SDK."""

    calls: list[dict] = []

    def __init__(self, address: str, *args, **kwargs):
        self.address = address

    def submit_job(self, **kwargs) -> str:
        FakeJobClient.calls.append({"address": self.address, **kwargs})
        return "raysubmit_fake0001"


@pytest.fixture
def fake_jobs(monkeypatch):
    import ray.job_submission

    FakeJobClient.calls = []
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeJobClient)
    return FakeJobClient.calls


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_sweep_text(tmp_path / "data", tmp_path / "cache", tmp_path / "ray",
                                    tmp_path / "store", "profiles:\n  smoke:\n"
                                    "    tune: {num_samples: 1}\n"))
    return path


def test_submit_passes_env_to_the_job_and_prints_no_secret(fake_jobs, sweep_file, monkeypatch,
                                                          capsys, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/mlflow/mlruns.db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET + "-aws")  # the submitting shell's
    caplog.set_level(logging.DEBUG)
    code = main(["submit", str(sweep_file), "--address", "http://127.0.0.1:8265", "--profile",
                 "smoke", "--env", f"WANDB_API_KEY={SECRET}", "--env", "SEPCORE_NOTE=a=b",
                 "--env", "EMPTY=", "tune.max_concurrent=1"])
    assert code == 0
    [call] = fake_jobs
    assert call["address"] == "http://127.0.0.1:8265"
    assert call["entrypoint"] == (f"python -m sweeps run {sweep_file} --profile smoke "
                                  "tune.max_concurrent=1")
    assert call["runtime_env"] == {"working_dir": ".", "env_vars": {
        "WANDB_API_KEY": SECRET, "SEPCORE_NOTE": "a=b", "EMPTY": "",
        # the shell's tracking URI travels so every node logs to the same store; its
        # credentials do not (the cluster's nodes hold their own)
        "MLFLOW_TRACKING_URI": "sqlite:////srv/mlflow/mlruns.db"}}
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "submitted job raysubmit_fake0001"
    assert "ray job logs --address http://127.0.0.1:8265 --follow raysubmit_fake0001" in out
    assert SECRET not in out + err + caplog.text


def test_submit_env_overrides_the_shell_tracking_uri(fake_jobs, sweep_file, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/mlflow/mlruns.db")
    assert main(["submit", str(sweep_file), "--address", "http://127.0.0.1:8265", "--env",
                 "MLFLOW_TRACKING_URI=http://127.0.0.1:5000"]) == 0
    assert fake_jobs[0]["runtime_env"]["env_vars"] == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert fake_jobs[0]["entrypoint"] == f"python -m sweeps run {sweep_file}"


def test_submit_leaves_credentials_of_uris_behind(fake_jobs, sweep_file, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://sepcore:{SECRET}@mlflow.internal:5000")
    assert main(["submit", str(sweep_file), "--address",
                 f"http://ray:{SECRET}@127.0.0.1:8265"]) == 0
    # the job's environment is visible in the Ray dashboard: the URI goes without its password
    assert fake_jobs[0]["runtime_env"]["env_vars"] == {
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}
    out, err = capsys.readouterr()
    assert "ray job logs --address http://***@127.0.0.1:8265 --follow" in out
    assert SECRET not in out + err


@pytest.mark.parametrize("item", [SECRET, f"={SECRET}"], ids=["no-key", "empty-key"])
def test_submit_refuses_bad_env_without_echoing_it(fake_jobs, sweep_file, capsys, item):
    code = main(["submit", str(sweep_file), "--address", "http://127.0.0.1:8265",
                 "--env", "A=1", "--env", item])
    assert code == 2 and fake_jobs == []
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: --env number 2 ")
    assert "KEY=VALUE" in err and SECRET not in out + err


def test_submit_checks_the_sweep_file_before_submitting(fake_jobs, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(tiny_sweep_text("d", "c", "r", "s", "tunes: {metric: valid_sisdr}\n"))
    assert main(["submit", str(path), "--address", "http://127.0.0.1:8265"]) == 2
    assert fake_jobs == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "tunes" in err


def test_resume_without_state_names_the_file(tmp_path, capsys):
    folder = tmp_path / "tiny-20260101-000000"
    folder.mkdir()
    assert main(["resume", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(folder / "sepcore_sweep.json") in err and "--file" in err
    assert out == ""
    assert main(["resume", str(tmp_path / "no-such-folder")]) == 2
    assert str(tmp_path / "no-such-folder" / "sepcore_sweep.json") in capsys.readouterr().err


def _workdir(tmp_path, *files):
    root = tmp_path / "work"
    for name in ("sweeps/run.py", *files):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{SECRET}\n" if name != "sweeps/run.py" else "print(1)\n")
    return root


@pytest.mark.parametrize("secret", [".env", "conf/server.pem", "keys/deploy.key", "id_rsa",
                                    ".stack/stack.json", ".env.local", "deep/a/b/id_ed25519.pub"])
def test_submit_refuses_a_working_dir_holding_a_secret(fake_jobs, sweep_file, tmp_path, capsys,
                                                       secret):
    work = _workdir(tmp_path, "docker/.env.example", secret)
    argv = ["submit", str(sweep_file), "--address", "http://127.0.0.1:8265", "--working-dir",
            str(work)]
    assert main(argv) == 2 and fake_jobs == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(work / secret) in err and "--allow-secrets" in err
    assert ".env.example" not in err and SECRET not in err
    assert main(argv + ["--allow-secrets"]) == 0
    assert fake_jobs[0]["runtime_env"]["working_dir"] == str(work)


def test_submit_uploads_a_working_dir_whose_ignore_files_exclude_its_secrets(fake_jobs, sweep_file,
                                                                             tmp_path):
    work = _workdir(tmp_path, ".env", "sub/x.pem", "docker/.env.example")
    (work / ".gitignore").write_text(".env\n")
    (work / "sub" / ".rayignore").write_text("*.pem\n")
    assert main(["submit", str(sweep_file), "--address", "http://127.0.0.1:8265",
                 "--working-dir", str(work)]) == 0
    assert len(fake_jobs) == 1


def test_the_repository_gitignore_covers_every_secret_pattern():
    """Each SECRET_PATTERNS name is ignored by the repository's .gitignore as Ray reads it (so a
    checkout never uploads one), while the committed templates are not."""
    from pathlib import Path

    from ray._private.thirdparty.pathspec import PathSpec

    from sweeps.submit import SECRET_PATTERNS, is_secret_name

    root = Path(__file__).resolve().parents[2]
    spec = PathSpec.from_lines("gitwildmatch", (root / ".gitignore").read_text().splitlines())
    for pattern in SECRET_PATTERNS:
        name = pattern.replace("*", "x")
        assert is_secret_name(name), name
        for path in (name, f"sub/dir/{name}"):  # a file of that name, or a folder's files
            assert spec.match_file(path) or spec.match_file(f"{path}/f"), path
    for template in (".env.example", "docker/.env.example"):
        assert not spec.match_file(template) and not is_secret_name(Path(template).name)
