"""Credentials out of everything the services log, print, tag or store.

The functions live in :mod:`sepcore.redact` (the ``sep`` command's error lines need them too, and
``sepcore`` never imports ``services``); this module keeps the services' and the sweeps' imports.
"""

from __future__ import annotations

from sepcore.redact import MASK, is_secret_name, redact, redact_data, split_credentials

__all__ = ["MASK", "is_secret_name", "redact", "redact_data", "split_credentials"]
