"""Submit ``python -m sweeps run`` to a running Ray cluster through the Job Submission SDK.

The working directory travels as the job's runtime environment (Ray honours ``.gitignore``, so
``.venv``, data and runs stay behind); the cluster's image must hold the dependencies.
Equivalent CLI form (the README's)::

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m sweeps run FILE
"""

from __future__ import annotations

import shlex


def entrypoint(file: str, profile: str | None = None, overrides: list[str] | None = None) -> str:
    parts = ["python", "-m", "sweeps", "run", file]
    if profile:
        parts += ["--profile", profile]
    parts += list(overrides or [])
    return " ".join(shlex.quote(p) for p in parts)


def submit(file: str, address: str, profile: str | None = None,
           overrides: list[str] | None = None, working_dir: str = ".",
           env_vars: dict[str, str] | None = None) -> str:
    """Submit the sweep; returns the job's submission id.

    ``MLFLOW_TRACKING_URI`` of the submitting shell travels with the job (so that every trial on
    every node logs to the same server) unless ``env_vars`` sets it; credentials never do (a
    ``user:password@`` in it is left behind): the cluster's nodes hold their own.
    """
    import os

    from ray.job_submission import JobSubmissionClient

    from services.redact import split_credentials

    client = JobSubmissionClient(address)
    runtime_env: dict = {"working_dir": working_dir}
    env = dict(env_vars or {})
    if "MLFLOW_TRACKING_URI" in os.environ:
        env.setdefault("MLFLOW_TRACKING_URI",
                       split_credentials(os.environ["MLFLOW_TRACKING_URI"])[0])
    if env:
        runtime_env["env_vars"] = env
    return client.submit_job(entrypoint=entrypoint(file, profile, overrides),
                             runtime_env=runtime_env)
