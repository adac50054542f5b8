"""Deployment files checked offline: the Kubernetes manifests against the JSON schemas of a
pinned Kubernetes version (kubernetes-validate) and KEDA's CRD, and against the code they
deploy (health paths, settings, the image's user); docker-compose.yml and the Dockerfile."""

from __future__ import annotations

import copy
import dataclasses
import http.server
import importlib.util
import io
import os
import re
import subprocess
import threading
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream_reco import health
from stream_reco.config import ENV, Settings
from stream_reco.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
# deploy/k8s is no package: its fetcher is loaded by path (for its pins).
_spec = importlib.util.spec_from_file_location("fetch_schemas", K8S / "fetch_schemas.py")
assert _spec is not None and _spec.loader is not None
fetch_schemas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fetch_schemas)
# The oldest Kubernetes release the manifests promise to work on; its schemas are strict
# (unknown fields refused, as `kubectl apply` refuses them by default).
K8S_VERSION = "1.31.0"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}", doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _docs(path)
    ]


def _kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in _manifests() if d["kind"] == kind]
    return doc


def _settings() -> Settings:
    """The settings a pod gets: the ConfigMap and the Secret as its environment."""
    env = {**_kind("ConfigMap")["data"], **_kind("Secret")["stringData"]}
    return Settings.from_env(env)


def _container() -> dict[str, Any]:
    (container,) = _kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


# Kubernetes' own resources ------------------------------------------------------------------


NATIVE = [(name, doc) for name, doc in _manifests() if doc["kind"] != "ScaledObject"]


@pytest.mark.parametrize("doc", [d for _, d in NATIVE], ids=[n for n, _ in NATIVE])
def test_manifest_validates_against_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schemas_refuse_an_unknown_field() -> None:
    """The check above could pass by accepting anything: a misspelt field must fail it."""
    doc = copy.deepcopy(_kind("Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = _docs(K8S / "kustomization.yaml")
    # secret.yaml is a template: an apply must never overwrite the real Secret with it.
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


# KEDA's ScaledObject: a CRD, validated against the CRD's own schema ---------------------------


def _keda_crd() -> dict[str, Any]:
    """KEDA's ScaledObject CRD, as deploy/k8s/fetch-schemas.sh caches it (fetched here when
    missing: the script is idempotent and pins the module zip's SHA-256)."""
    home = Settings.from_env().home
    home = home if home.is_absolute() else ROOT / home
    path = home / "k8s-schemas" / f"keda-{fetch_schemas.KEDA_VERSION}" / fetch_schemas.NAME
    if not path.is_file():
        run = _fetch_schemas({})
        assert run.returncode == 0, f"deploy/k8s/fetch-schemas.sh failed: {run.stderr}"
    (crd,) = _docs(path)
    return crd


def _fetch_schemas(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy/k8s/fetch-schemas.sh as setup.sh runs it, with `env` over this environment."""
    return subprocess.run(
        ["bash", str(K8S / "fetch-schemas.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


def test_fetch_schemas_fills_an_empty_cache_without_go(tmp_path: Path) -> None:
    """A fresh clone: no cache and no `go` on PATH (setup.sh does not install it)."""
    path = ":".join(
        d for d in os.environ.get("PATH", "").split(":") if d and not (Path(d) / "go").exists()
    )
    env = {"STREAM_RECO_HOME": str(tmp_path), "PATH": path}
    run = _fetch_schemas(env)
    assert run.returncode == 0, run.stderr
    dest = tmp_path / "k8s-schemas" / f"keda-{fetch_schemas.KEDA_VERSION}"
    crd = dest / fetch_schemas.NAME
    (doc,) = _docs(crd)
    assert doc["spec"]["names"]["kind"] == "ScaledObject"
    assert crd.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in dest.iterdir()) == ["SOURCE", fetch_schemas.NAME]  # no temp
    before = crd.stat().st_mtime_ns
    again = _fetch_schemas(env)  # idempotent: nothing fetched, nothing rewritten
    assert again.returncode == 0 and again.stdout == ""
    assert crd.stat().st_mtime_ns == before


def test_fetch_schemas_refuses_a_zip_that_does_not_match_its_pin(tmp_path: Path) -> None:
    """A proxy serving another file: refused with the hashes, and nothing cached."""
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as z:
        member = f"{fetch_schemas.KEDA_MODULE}@{fetch_schemas.KEDA_VERSION}/{fetch_schemas.CRD}"
        z.writestr(member, "kind: CustomResourceDefinition\n")
    body = bad.getvalue()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's API)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        run = _fetch_schemas({"STREAM_RECO_HOME": str(tmp_path), "GOPROXY": f"{url},direct"})
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 1
    assert fetch_schemas.KEDA_ZIP_SHA256 in run.stderr
    assert not list(tmp_path.rglob("*.yaml"))


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones, as the API
    server's strict field validation does (an OpenAPI schema alone would let typos through)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    open_ = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not open_:
        out["additionalProperties"] = False
    return out


def _validate_scaledobject(doc: dict[str, Any]) -> None:
    crd = _keda_crd()
    group, version = doc["apiVersion"].split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == doc["kind"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator(schema).validate(doc)


def test_scaledobject_validates_against_the_keda_crd() -> None:
    _validate_scaledobject(_kind("ScaledObject"))


def test_the_crd_schema_refuses_an_unknown_field() -> None:
    doc = copy.deepcopy(_kind("ScaledObject"))
    doc["spec"]["maxReplicas"] = 4  # the HPA's name for it, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        _validate_scaledobject(doc)


def test_scaledobject_scales_the_worker_on_its_own_consumer_groups() -> None:
    settings, scaled = _settings(), _kind("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == _kind("Deployment")["metadata"]["name"]
    # Replicas beyond the partition count would own no partition: they would idle.
    assert scaled["maxReplicaCount"] == settings.partitions
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    watched = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in scaled["triggers"]}
    assert watched == {
        (settings.events_group, settings.topic_events),
        (settings.requests_group, settings.topic_requests),
    }
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["bootstrapServersFromEnv"] in _kind("ConfigMap")["data"]


# The manifests against the code they deploy ---------------------------------------------------


def test_every_variable_is_a_real_setting() -> None:
    """A misspelt or retired name would be ignored silently by the worker."""
    given = {**_kind("ConfigMap")["data"], **_kind("Secret")["stringData"]}
    assert set(given) - set(ENV.values()) == set()
    _settings()  # and their values pass Settings.validate()


def test_the_pods_bind_an_address_the_settings_accept() -> None:
    """Probes and scrapes reach the pod's address; a bind with a port or brackets is refused
    at start (Settings.validate), not turned into a server nobody reaches."""
    assert _settings().web_bind in ("0.0.0.0", "::")
    env = {**_kind("ConfigMap")["data"], **_kind("Secret")["stringData"]}
    for bad in ("0.0.0.0:6066", "[::]", "", " 0.0.0.0", "http://0.0.0.0"):
        with pytest.raises(ConfigError, match="STREAM_RECO_WEB_BIND"):
            Settings.from_env({**env, "STREAM_RECO_WEB_BIND": bad})
    for good in ("127.0.0.1", "::", "::1", "localhost", "worker-0.stream-reco"):
        assert Settings.from_env({**env, "STREAM_RECO_WEB_BIND": good}).web_bind == good


def test_secrets_are_in_the_secret_only() -> None:
    secret = {ENV[f.name] for f in dataclasses.fields(Settings) if not f.repr} | {"REDIS_URL"}
    assert secret <= set(_kind("Secret")["stringData"])
    assert not secret & set(_kind("ConfigMap")["data"])
    refs = _container()["envFrom"]
    assert {"name": _kind("ConfigMap")["metadata"]["name"]} in [r.get("configMapRef") for r in refs]
    assert {"name": _kind("Secret")["metadata"]["name"]} in [r.get("secretRef") for r in refs]


def test_probes_ask_the_paths_the_health_module_serves() -> None:
    container, settings = _container(), _settings()
    assert container["readinessProbe"]["httpGet"]["path"] == health.READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == health.LIVE_PATH
    assert container["startupProbe"]["httpGet"]["path"] == health.LIVE_PATH
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == settings.web_port
        # The probe gives up before the checks behind it could: they are bounded below it.
        assert container[probe]["timeoutSeconds"] > health.KAFKA_TIMEOUT_S
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_service_and_budget_select_the_worker_pods() -> None:
    labels = _kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    service, pdb = _kind("Service"), _kind("PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == port["targetPort"] == "web"
    # Scraped through the pods only: annotations on the Service too would have a Prometheus
    # that discovers both scrape every pod twice (and sum doubled counters).
    assert not any(
        k.startswith("prometheus.io/") for k in service["metadata"].get("annotations", {})
    )
    notes = _kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/path"] == "/metrics"
    assert int(notes["prometheus.io/port"]) == _settings().web_port
    web = (ROOT / "stream_reco" / "web.py").read_text(encoding="utf-8")
    assert '@app.page("/metrics")' in web


def test_a_drain_never_takes_the_last_worker() -> None:
    """Without KEDA the Deployment's own count stands: more than the budget lets a drain take."""
    replicas = _kind("Deployment")["spec"]["replicas"]
    assert replicas > _kind("PodDisruptionBudget")["spec"]["maxUnavailable"]
    assert replicas == _kind("ScaledObject")["spec"]["minReplicaCount"]


def _dockerfile_final_stage() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    starts = [n for n, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(starts) >= 2, "the Dockerfile must be multi-stage (build tools stay out)"
    return lines[starts[-1] :]


def _instruction(stage: list[str], name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.startswith(f"{name} ")]


def test_pod_runs_as_the_images_non_root_user() -> None:
    (user,) = _instruction(_dockerfile_final_stage(), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric USER, so runAsNonRoot can verify it"
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid or uid)
    box = _container()["securityContext"]
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    assert pod["topologySpreadConstraints"]


def test_the_state_dir_is_the_one_writable_volume() -> None:
    home = str(_settings().home)
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in _kind("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[home]]
    env = " ".join(_instruction(_dockerfile_final_stage(), "ENV"))
    assert f"STREAM_RECO_HOME={home}" in env  # the image and the pods agree on it


# The Dockerfile and docker-compose.yml (no Docker here: parsed, not run) ----------------------


def test_image_checks_its_health_with_the_standard_library() -> None:
    stage = _dockerfile_final_stage()
    (check,) = _instruction(stage, "HEALTHCHECK")
    assert health.READY_PATH in check and "urllib.request" in check
    assert _instruction(stage, "EXPOSE") == [str(Settings().web_port)]
    # The runtime stage starts from a slim Python (global ARGs resolved as docker does).
    text = DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    (base,) = _instruction(stage, "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_compose_services_have_health_checks() -> None:
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    one_shot = {n for n, s in services.items() if s["healthcheck"].get("disable")}
    assert one_shot == {"kafka-init", "demo"}  # jobs that run and exit serve nothing
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ("worker", "worker-web"):
        assert health.READY_PATH in " ".join(services[name]["healthcheck"]["test"])
    assert "replicas" in services["worker"]["deploy"]
    port = Settings().web_port
    assert f"127.0.0.1:{port}:{port}" in services["worker-web"]["ports"]
