"""Helpers of the Kubernetes export tests: export a config, read the stored LWS CRDs."""
from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from launcher.core.kube.export import export_kubernetes
from launcher.core.kube.objects import Options
from launcher.deploy.files import compile_file
from tests.helpers import ROOT

CRDS = ROOT / "tests" / "kube" / "lws-v0.9.0"
# git blob ids of the CRDs at kubernetes-sigs/lws v0.9.0 (tests/kube/lws-v0.9.0/README.md)
CRD_BLOBS = {"leaderworkerset.x-k8s.io_leaderworkersets.yaml.gz": "21054dbb1fe5d7ba83dc7271f932c1f9e7baaedc",
             "disaggregatedset.x-k8s.io_disaggregatedsets.yaml.gz": "b8fa7cd04762a884aea3836ce122013fde30facc"}
KUBERNETES = "1.30.0"  # the Kubernetes version core objects are validated for (StatefulSet pod-index label: 1.28)


def export(config: Path, opts: Options = Options()) -> dict[str, bytes]:
    return export_kubernetes(compile_file(str(config)), opts)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def crd_bytes(name: str) -> bytes:
    return gzip.decompress((CRDS / name).read_bytes())


def _closed(schema: Any) -> Any:
    """The CRD's schema with unknown fields refused: the API server prunes them silently, which
    would hide a misspelt field from the test (kubectl only warns)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@lru_cache(maxsize=None)
def crd_schema(kind: str) -> dict[str, Any]:
    """openAPIV3Schema of the served version of the CRD of `kind` (LeaderWorkerSet, DisaggregatedSet)."""
    name = {"LeaderWorkerSet": "leaderworkerset.x-k8s.io_leaderworkersets.yaml.gz",
            "DisaggregatedSet": "disaggregatedset.x-k8s.io_disaggregatedsets.yaml.gz"}[kind]
    crd = yaml.safe_load(crd_bytes(name))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["name"] == "v1")
    return _closed(version["schema"]["openAPIV3Schema"])
