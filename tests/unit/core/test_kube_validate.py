"""Every object `launcher export kubernetes` writes passes offline validation, as CI runs it.

LeaderWorkerSet and DisaggregatedSet objects against the openAPIV3Schema of kubernetes-sigs/lws
v0.9.0's CRDs (stored under tests/kube with their license; unknown fields refused), core objects
with kubernetes-validate for Kubernetes 1.30 (strict: unknown fields refused).
"""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from launcher.core.kube.objects import Options
from tests.kube_export import CRD_BLOBS, KUBERNETES, crd_bytes, crd_schema, export, git_blob_id
from tests.unit.core.test_kube_export import EXPORTED

CORE = {"ConfigMap", "Service", "StatefulSet", "Deployment", "Secret"}


def validate(doc: dict) -> None:
    if doc["kind"] in ("LeaderWorkerSet", "DisaggregatedSet"):
        jsonschema.Draft7Validator(crd_schema(doc["kind"])).validate(doc)
    else:
        assert doc["kind"] in CORE, doc["kind"]
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def objects(files: dict[str, bytes]) -> list[dict]:
    return [yaml.safe_load(v) for k, v in files.items() if k.endswith(".yaml") and k != "kustomization.yaml"]


def test_the_stored_crds_are_lws_v0_9_0s():
    for name, blob in CRD_BLOBS.items():
        assert git_blob_id(crd_bytes(name)) == blob, name


@pytest.mark.parametrize("config", EXPORTED, ids=lambda p: p.stem)
@pytest.mark.parametrize("volcano", [False, True], ids=["default-scheduler", "volcano"])
def test_every_exported_object_validates(config: Path, volcano: bool):
    docs = objects(export(config, Options(volcano=volcano, namespace="serving")))
    assert docs
    for doc in docs:
        validate(doc)
    kinds = {d["kind"] for d in docs}
    assert kinds & {"LeaderWorkerSet", "DisaggregatedSet"}


def test_the_validation_refuses_what_a_cluster_would():
    # the checks can fail: a misspelt LWS field, a bad enum, a core object's unknown field
    docs = objects(export(EXPORTED[0]))
    lws = next(d for d in docs if d["kind"] in ("LeaderWorkerSet", "DisaggregatedSet"))
    spec = lws["spec"] if lws["kind"] == "LeaderWorkerSet" else lws["spec"]["roles"][0]["spec"]
    for change in ({"restartPolicy": "RecreateGroup"}, {"sise": 2}):
        bad = copy.deepcopy(lws)
        target = bad["spec"] if bad["kind"] == "LeaderWorkerSet" else bad["spec"]["roles"][0]["spec"]
        target["leaderWorkerTemplate"].update(change)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)
    bad = copy.deepcopy(lws)
    (bad["spec"] if bad["kind"] == "LeaderWorkerSet" else bad["spec"]["roles"][0]["spec"])["startupPolicy"] = "Now"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate({**cm, "datta": {}})
