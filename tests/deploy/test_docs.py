"""The deployment docs: README.md has a Deploying section linking infra/README.md, and every
relative link in them names a file of the repository."""

from __future__ import annotations

import re

from tests.deploy import checks

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _relative_links(path):
    return [t for t in LINK.findall(path.read_text()) if not re.match(r"[a-z]+://", t)]


def test_readme_has_a_deploying_section_linking_infra():
    text = (checks.ROOT / "README.md").read_text()
    assert "\n## Deploying\n" in text
    section = text.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    assert "(infra/README.md)" in section


def test_links_resolve():
    for doc in (checks.ROOT / "README.md", checks.ROOT / "infra" / "README.md",
                checks.K8S / "schemas" / "README.md"):
        for target in _relative_links(doc):
            assert (doc.parent / target).exists(), f"{doc.name}: link {target} resolves to nothing"


def test_env_file_is_ignored_by_git():
    assert ".env" in (checks.DOCKER / ".gitignore").read_text().split()
