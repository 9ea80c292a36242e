"""Offline validation of the deployment files: compose, Prometheus config, Kubernetes.

- docker-compose.yml against the Compose Specification JSON Schema (vendored in
  deploy/schemas/, Apache-2.0), plus references: depends_on targets, named volumes, mounted
  files, shelfcast commands the CLI knows, Prometheus scrape jobs naming real services/ports.
- k8s/: every overlay rendered with a small kustomize subset (resources, namespace, labels,
  images, strategic-merge patches; what these files use) and each object validated against the
  Kubernetes OpenAPI schemas shipped by the `kubernetes-validate` package, strictly (unknown
  fields fail). Then the references: ConfigMaps/Secrets, probe ports, Service and PDB
  selectors, non-root security contexts, resource limits, the GPU request.
- `docker compose config` / `kubectl kustomize` when those tools exist (skipped otherwise).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "k8s"
OVERLAYS = ["dev", "production", "gpu"]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "deploy/schemas/compose-spec.json").read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_compose_references_are_consistent(compose: dict[str, Any]) -> None:
    from shelfcast.cli import _parser

    services: dict[str, Any] = compose["services"]
    declared_volumes = set(compose.get("volumes", {}))
    commands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing file {source}"
            else:
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
        if str(svc.get("image", "")).startswith("shelfcast"):
            assert svc["command"][0] in commands | {"alerts"}, f"{name}: {svc['command']}"
            assert "build" in svc, f"{name} must build the image it runs"
            env = svc["environment"]
            assert env["SHELFCAST_KAFKA_BOOTSTRAP"].split(":")[0] in services
            if svc["command"][0] in ("worker", "optimizer"):
                port = env["SHELFCAST_WEB_PORT"]
                assert port in svc["healthcheck"]["test"][-1]
                assert port in [str(p) for p in svc.get("expose", [])]
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed name prevents --scale"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert services["worker-gpu"]["environment"]["SHELFCAST_DEVICE"] == "cuda"
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    for svc in ("kafka", "postgres", "worker", "optimizer", "prometheus"):
        assert "healthcheck" in services[svc], svc
    for name in ("retrain", "retrain-on-drift"):  # the `retrain` profile
        svc = services[name]
        assert svc["profiles"] == ["retrain"] and svc["command"][0] == "retrain"
        assert svc["build"]["args"]["EXTRAS"] == "forecast"  # torch
        model_path = svc["environment"]["SHELFCAST_MODEL_PATH"]
        (mount,) = svc["volumes"]
        assert model_path.startswith(mount.split(":")[1] + "/")  # the volume is the parent
    assert "--on-drift" in services["retrain-on-drift"]["command"]


def test_prometheus_scrapes_every_shelfcast_service(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    services = compose["services"]
    scraped = set()
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                assert host in services, f"job {job['job_name']} scrapes unknown {host}"
                assert str(sd["port"]) == services[host]["environment"]["SHELFCAST_WEB_PORT"]
                scraped.add(host)
    assert {"worker", "worker-gpu", "optimizer"} <= scraped
    rules = yaml.safe_load((ROOT / "deploy/prometheus-rules.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    for metric in ("shelfcast_consumer_lag_sum", "shelfcast_dead_letters_by_reason_total",
                   "shelfcast_inference_seconds_bucket", "shelfcast_events_in_total"):
        assert metric in exprs


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- kustomize subset


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as these files need it: maps merge, named-item lists merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and base and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out_list = [copy.deepcopy(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(out_list)}
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = _merge(out_list[index[item["name"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _template(obj: dict[str, Any]) -> dict[str, Any]:
    """A workload's pod template (a CronJob's inside its job template)."""
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _template(obj)["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return _template(obj)["spec"]


def render(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization directory (the subset of kustomize these files use)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
    assert set(kust) <= known, f"renderer lacks {set(kust) - known} ({directory})"
    objects: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = (directory / res).resolve()
        objects += render(path) if path.is_dir() else _load_all(path)
    for patch in kust.get("patches", []):
        for doc in _load_all(directory / patch["path"]):
            matches = [o for o in objects if o["kind"] == doc["kind"]
                       and o["metadata"]["name"] == doc["metadata"]["name"]]
            assert len(matches) == 1, f"patch {patch['path']} matches {len(matches)} objects"
            objects[objects.index(matches[0])] = _merge(matches[0], doc)
    for obj in objects:
        if "namespace" in kust and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kust["namespace"]
        for label in kust.get("labels", []):
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and obj["kind"] in WORKLOADS:
                _template(obj)["metadata"]["labels"].update(label["pairs"])
        if obj["kind"] in WORKLOADS:
            for container in _containers(obj):
                for image in kust.get("images", []):
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        container["image"] = (f"{image.get('newName', name)}:"
                                              f"{image.get('newTag', tag or 'latest')}")
    return objects


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def test_k8s_objects_match_the_kubernetes_schemas(rendered: tuple[str, list[dict]]) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    version = latest_version()
    overlay, objects = rendered
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} "
                        f"at {list(exc.path)}")


def test_k8s_references_and_hardening(rendered: tuple[str, list[dict]]) -> None:
    overlay, objects = rendered
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert len(names) == len(objects), "duplicate objects"
    external_secrets = {"shelfcast-secrets"} if overlay != "dev" else set()

    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for obj in workloads:
        what = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        pod = _pod_spec(obj)
        if obj["kind"] not in ("Job", "CronJob"):
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= _template(obj)["metadata"]["labels"].items()
        assert pod["securityContext"]["runAsNonRoot"] is True, what
        volumes = {v["name"] for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}
        for c in _containers(obj):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, what
            assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"], what
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in by_kind.get("ConfigMap", {}), what
                if "secretRef" in src:
                    name = src["secretRef"]["name"]
                    assert name in by_kind.get("Secret", {}) or name in external_secrets, what
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes | claims, f"{what}: mount {m['name']}"
            ports = {p.get("name") for p in c.get("ports", [])} | {
                p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                spec = c.get(probe, {})
                for handler in ("httpGet", "tcpSocket"):
                    if handler in spec:
                        assert spec[handler]["port"] in ports, f"{what}: {probe} port"
        if obj["metadata"]["name"].startswith("shelfcast-") and obj["kind"] == "Deployment":
            c = _containers(obj)[0]
            assert c["readinessProbe"] and c["livenessProbe"], what
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, what
            annotations = obj["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == "6066"

    for kind in ("Service", "PodDisruptionBudget"):
        for obj in by_kind.get(kind, {}).values():
            sel = obj["spec"]["selector"]
            sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
            assert any(sel.items() <= _template(w)["metadata"]["labels"].items()
                       for w in workloads), f"{overlay}: {kind}/{obj['metadata']['name']}"

    worker = by_kind["Deployment"]["shelfcast-worker"]
    config = by_kind["ConfigMap"]["shelfcast-config"]["data"]
    assert worker["spec"]["replicas"] <= int(config["SHELFCAST_TOPIC_PARTITIONS"])
    assert "shelfcast-worker" in by_kind["PodDisruptionBudget"]
    assert "shelfcast-migrate" in by_kind["Job"]
    retrain = by_kind["CronJob"]["shelfcast-retrain"]
    assert retrain["spec"]["concurrencyPolicy"] == "Forbid"  # one writer of the model dir
    (retrain_container,) = _containers(retrain)
    assert retrain_container["args"][0] == "retrain"
    assert retrain_container["image"].startswith("ghcr.io/example/shelfcast-gpu:")  # has torch
    model_path = {e["name"]: e.get("value") for e in retrain_container["env"]}[
        "SHELFCAST_MODEL_PATH"]
    (models_mount,) = [m for m in retrain_container["volumeMounts"]
                       if model_path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert model_path != models_mount["mountPath"]  # the swap renames it: not a mount point
    claim = {v["name"]: v for v in _pod_spec(retrain)["volumes"]}[models_mount["name"]]
    assert claim["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
    resources = _containers(worker)[0]["resources"]
    if overlay == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == "1"
        env = {e["name"]: e.get("value") for e in _containers(worker)[0]["env"]}
        assert env["SHELFCAST_DEVICE"] == "cuda"
        assert _containers(worker)[0]["image"].startswith("ghcr.io/example/shelfcast-gpu:")
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
    if overlay == "dev":
        assert config["SHELFCAST_KAFKA_BOOTSTRAP"].split(":")[0] in by_kind["Service"]
    for obj in objects:
        if overlay != "dev" or obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == (
                "shelfcast-dev" if overlay == "dev" else "shelfcast"), obj["metadata"]["name"]


def test_kafka_ca_file_is_mounted_where_the_clients_read_it(
        rendered: tuple[str, list[dict]]) -> None:
    """A SHELFCAST_KAFKA_SSL_CAFILE in the ConfigMap must lie in a Secret volume mounted in
    every Kafka client (worker, optimizer); without a mount the client refuses to start."""
    overlay, objects = rendered
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    cafile = config.get("SHELFCAST_KAFKA_SSL_CAFILE")
    if overlay == "dev":
        assert cafile is None
        return
    assert config["SHELFCAST_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert cafile, f"{overlay}: SASL_SSL without a CA file"
    for name in ("shelfcast-worker", "shelfcast-optimizer"):
        obj = next(o for o in objects if o["kind"] == "Deployment"
                   and o["metadata"]["name"] == name)
        volumes = {v["name"]: v for v in _pod_spec(obj)["volumes"]}
        mounts = [m for m in _containers(obj)[0]["volumeMounts"]
                  if cafile.startswith(m["mountPath"].rstrip("/") + "/")]
        assert len(mounts) == 1, f"{overlay}: {name} does not mount {cafile}"
        secret = volumes[mounts[0]["name"]]["secret"]
        file_name = cafile[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
        assert file_name in {item["path"] for item in secret["items"]}, (overlay, name)
        assert mounts[0]["readOnly"] is True


def test_keda_scaler_targets_the_worker_deployment() -> None:
    (scaled,) = _load_all(K8S / "keda/scaledobject.yaml")
    base = render(K8S / "base")
    deployments = {o["metadata"]["name"]: o for o in base if o["kind"] == "Deployment"}
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    config = next(o for o in base if o["kind"] == "ConfigMap")["data"]
    group = config["SHELFCAST_APP_ID"]
    assert all(t["metadata"]["consumerGroup"] == group for t in scaled["spec"]["triggers"])
    prod = render(K8S / "overlays/production")
    partitions = int(next(o for o in prod if o["kind"] == "ConfigMap")["data"][
        "SHELFCAST_TOPIC_PARTITIONS"])
    assert scaled["spec"]["maxReplicaCount"] <= partitions


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_kustomize_builds(overlay: str) -> None:
    proc = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
