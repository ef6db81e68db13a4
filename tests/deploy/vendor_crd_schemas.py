"""Refresh ``infra/k8s/schemas/`` from a KubeRay checkout (run by hand, not a test).

    git clone --branch v1.7.0 https://github.com/ray-project/kuberay /tmp/kuberay
    python tests/deploy/vendor_crd_schemas.py /tmp/kuberay v1.7.0 <commit>

Writes, for RayCluster, RayJob and RayService, the ``openAPIV3Schema`` of the served ``v1``
version from ``ray-operator/config/crd/bases/ray.io_<plural>.yaml``, with the ``description``
texts dropped (they are documentation, not constraints) and a ``$comment`` naming the source.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

CRDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
OUT = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "schemas"


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def main(checkout: str, tag: str, commit: str) -> None:
    for kind, plural in CRDS.items():
        rel = f"ray-operator/config/crd/bases/ray.io_{plural}.yaml"
        crd = yaml.safe_load((Path(checkout) / rel).read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = {
            "$comment": f"{kind} (ray.io/v1) openAPIV3Schema from ray-project/kuberay {tag} "
                        f"(commit {commit}), {rel}; descriptions removed. Apache-2.0.",
            **_strip(version["schema"]["openAPIV3Schema"]),
        }
        path = OUT / f"{plural}.v1.json"
        path.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:4])
