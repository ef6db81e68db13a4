"""Submit ``python -m sweeps run`` to a running Ray cluster through the Job Submission SDK.

The working directory travels as the job's runtime environment (Ray honours ``.gitignore`` and
``.rayignore``, so ``.venv``, data and runs stay behind); the cluster's image must hold the
dependencies. Before anything is sent, the files Ray would upload are walked with Ray's own rules
and a secret-looking one (:data:`SECRET_PATTERNS`: ``.env``, ``*.pem``, ``*.key``, ``id_rsa*``,
``.stack/`` …; templates such as ``.env.example`` excepted) stops the submission with an error
naming it, unless ``allow_secrets``.
Equivalent CLI form (the README's)::

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m sweeps run FILE
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shlex
from pathlib import Path

from sweeps.errors import SweepError

# names of files (or folders) that hold secrets; the repository's .gitignore lists each of them
SECRET_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "*.keystore",
                   "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".netrc", ".pgpass",
                   ".stack", "stack.env", "auth_token")
# committed templates of such files, which hold placeholders only
TEMPLATE_SUFFIXES = (".example", ".sample", ".template")

_quiet = logging.getLogger("sweeps.submit.scan")
_quiet.setLevel(logging.WARNING)  # Ray's walker logs each ignore file it honours


def is_secret_name(name: str) -> bool:
    """True for a file/folder name of :data:`SECRET_PATTERNS` that is not a template."""
    if name.endswith(TEMPLATE_SUFFIXES):
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_PATTERNS)


def secret_files(working_dir: str | Path) -> list[Path]:
    """The files Ray would upload from ``working_dir`` whose name, or a folder's on their path,
    looks like a secret (:func:`is_secret_name`).

    The walk is Ray's own (``_dir_travel``, the function that builds the upload): ``.gitignore``
    (unless ``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1``) and ``.rayignore`` files at every level are
    honoured, so a secret they exclude stays behind and is not reported.
    """
    from ray._private.runtime_env.packaging import _dir_travel

    root = Path(working_dir).resolve()
    found: list[Path] = []

    def visit(path: Path) -> None:  # files only: Ray visits a folder whose files it then skips
        if path.is_file() and any(is_secret_name(part)
                                  for part in path.relative_to(root).parts):
            found.append(path)

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    _dir_travel(root, [], visit, include_gitignore=include_gitignore, logger=_quiet)
    return sorted(found)


def entrypoint(file: str, profile: str | None = None, overrides: list[str] | None = None) -> str:
    parts = ["python", "-m", "sweeps", "run", file]
    if profile:
        parts += ["--profile", profile]
    parts += list(overrides or [])
    return " ".join(shlex.quote(p) for p in parts)


def submit(file: str, address: str, profile: str | None = None,
           overrides: list[str] | None = None, working_dir: str = ".",
           env_vars: dict[str, str] | None = None, allow_secrets: bool = False) -> str:
    """Submit the sweep; returns the job's submission id.

    A working directory holding a secret-looking file that Ray would upload
    (:func:`secret_files`) is refused with a :class:`SweepError` naming it, unless
    ``allow_secrets``.

    ``MLFLOW_TRACKING_URI`` of the submitting shell travels with the job (so that every trial on
    every node logs to the same server) unless ``env_vars`` sets it; credentials never do (a
    ``user:password@`` in it is left behind): the cluster's nodes hold their own.
    """
    from ray.job_submission import JobSubmissionClient

    from services.redact import split_credentials

    local = "://" not in str(working_dir)  # a remote package (s3://…/code.zip) is not walked
    if local and not Path(working_dir).is_dir():
        raise SweepError(f"--working-dir {working_dir} is not a folder", key="--working-dir")
    if local and not allow_secrets:
        secrets = secret_files(working_dir)
        if secrets:
            more = f" (and {len(secrets) - 1} more)" if len(secrets) > 1 else ""
            raise SweepError(f"--working-dir {working_dir} holds {secrets[0]}{more}, which looks "
                             f"like a secret and would be uploaded to the cluster; move it out, "
                             f"list it in .gitignore or .rayignore, or pass --allow-secrets",
                             key="--working-dir")
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
