"""`launcher export kubernetes FILE -o DIR`: writes the export and init-image/, or refuses (exit 2,
every key named at its line:col, nothing written)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from tests.helpers import CONFIGS, ROOT, run_cli

GOLDEN = ROOT / "tests" / "golden" / "kubernetes"


def test_export_writes_the_golden_files_and_the_init_image(tmp_path: Path):
    out = tmp_path / "k8s"
    run = run_cli("export", "kubernetes", str(CONFIGS / "k8s-vllm-dp-2node.yaml"), "-o", str(out))
    assert run.code == 0, run.err
    golden = {p.name: p.read_bytes() for p in (GOLDEN / "k8s-vllm-dp-2node").iterdir()}
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: v for k, v in got.items() if not k.startswith("init-image/")} == golden
    assert set(got) - set(golden) == {"init-image/Containerfile", "init-image/site.zip"}
    names = zipfile.ZipFile(io.BytesIO(got["init-image/site.zip"])).namelist()
    assert {"launcher/host/rendezvous.py", "launcher/core/ranktable.py", "launcher/core/jsonfmt.py"} <= set(names)
    assert b"COPY site.zip /opt/ascend-launcher/site.zip" in got["init-image/Containerfile"]
    assert f"into {out}/" in run.out and "kubectl apply -k" in run.out


def test_export_options_reach_the_objects(tmp_path: Path):
    out = tmp_path / "k8s"
    run = run_cli("export", "kubernetes", str(CONFIGS / "k8s-vllm-pd.yaml"), "-o", str(out), "--volcano",
                  "--namespace", "serving", "--npu-resource", "huawei.com/Ascend910B", "--init-image", "reg/init:1")
    assert run.code == 0, run.err
    ds = (out / "vllm-pd-pd.disaggregatedset.yaml").read_text()
    assert "schedulerName: volcano" in ds and "huawei.com/Ascend910B: 8" in ds and "image: reg/init:1" in ds
    assert "namespace: serving" in (out / "kustomization.yaml").read_text()


def test_a_config_kubernetes_cannot_express_is_refused_and_nothing_is_written(tmp_path: Path):
    out = tmp_path / "k8s"
    config = CONFIGS / "mindie-atb-2x8-container.yaml"
    run = run_cli("export", "kubernetes", str(config), "-o", str(out))
    assert run.code == 2
    assert f"{config}:53:5: error: instances[0].processes: not expressible on Kubernetes: per_device" in run.err
    assert not out.exists()


def test_export_refuses_a_directory_that_is_not_empty(tmp_path: Path):
    (tmp_path / "old").write_text("x")
    run = run_cli("export", "kubernetes", str(CONFIGS / "k8s-vllm-dp-2node.yaml"), "-o", str(tmp_path))
    assert run.code == 2 and "not an empty directory" in run.err
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
