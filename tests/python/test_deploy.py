"""The Dockerfile and the Kubernetes manifests agree with the gateway they deploy.

Nothing here builds an image or talks to a cluster. The manifests are parsed as YAML and
checked against the built binary (`--help` lists every flag with its environment variable),
against `src/server.rs` (the health service names), and against a running gateway (the probes'
health services answer SERVING).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import REPO_ROOT, SETTING_PREFIXES

KUBE_DIR = REPO_ROOT / "deploy" / "kubernetes"
DOCKERFILE = REPO_ROOT / "Dockerfile"
SERVER_RS = REPO_ROOT / "src" / "server.rs"

# Files of KUBE_DIR that kustomization.yaml does not apply: itself, and the example Secret
# (a deploy must never overwrite real credentials with its placeholders).
NOT_APPLIED = {"kustomization.yaml", "secret.example.yaml"}

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


# ---------------------------------------------------------------------------------------------
# What the tests read


def load_yaml_documents(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict]]:
    """Every YAML file of deploy/kubernetes, by file name, as its list of documents."""
    files = sorted(KUBE_DIR.glob("*.yaml"))
    assert files, f"no manifests in {KUBE_DIR}"
    return {path.name: load_yaml_documents(path) for path in files}


def applied_of_kind(manifests: dict[str, list[dict]], kind: str) -> list[dict]:
    return [
        doc
        for name, docs in manifests.items()
        if name not in NOT_APPLIED
        for doc in docs
        if doc.get("kind") == kind
    ]


def only_one(docs: list[dict], kind: str) -> dict:
    assert len(docs) == 1, f"expected one {kind}, found {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module")
def deployment(manifests) -> dict:
    return only_one(applied_of_kind(manifests, "Deployment"), "Deployment")


@pytest.fixture(scope="module")
def pod_spec(deployment) -> dict:
    return deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod_spec) -> dict:
    return only_one(pod_spec["containers"], "container in the Deployment")


@pytest.fixture(scope="module")
def configmap(manifests) -> dict:
    return only_one(applied_of_kind(manifests, "ConfigMap"), "ConfigMap")


@pytest.fixture(scope="module")
def example_secret(manifests) -> dict:
    return only_one(manifests["secret.example.yaml"], "Secret in secret.example.yaml")


@pytest.fixture(scope="module")
def container_env(container, configmap) -> dict[str, str | None]:
    """The environment the gateway container gets: the ConfigMap's keys, then the explicit
    entries (which win, as in Kubernetes). Values that come from a Secret are None."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"unexpected envFrom source {source}; only the ConfigMap is expected"
        assert ref["name"] == configmap["metadata"]["name"], "envFrom names another ConfigMap"
        env.update(configmap["data"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value")
    return env


@pytest.fixture(scope="module")
def help_text(gateway_bin) -> str:
    """`--help` of the built gateway, run without any setting in its environment so that the
    defaults print as they are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    result = subprocess.run(
        [str(gateway_bin), "--help"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"--help exited with {result.returncode}:\n{result.stderr}"
    return result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


@pytest.fixture(scope="module")
def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's last stage, the image that runs."""
    instructions = dockerfile_instructions()
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, sep, value = pair.partition("=")
                assert sep, f"use ENV NAME=value in the Dockerfile, not {arguments!r}"
                env[name] = value
    return env


def dockerfile_exposed_ports(stage: list[tuple[str, str]]) -> set[int]:
    return {
        int(port.split("/")[0])
        for keyword, arguments in stage
        if keyword == "EXPOSE"
        for port in arguments.split()
    }


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    assert sep and port.isdigit(), f"{address!r} is not HOST:PORT"
    return host, int(port)


def container_port(container: dict, name: str) -> int:
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"the container should declare one port named {name!r}"
    return ports[0]


def resolve_target_port(container: dict, service_port: dict) -> int:
    target = service_port.get("targetPort", service_port["port"])
    return container_port(container, target) if isinstance(target, str) else target


def service_port(service: dict, name: str) -> dict:
    ports = [p for p in service["spec"]["ports"] if p.get("name") == name]
    assert len(ports) == 1, f"Service {service['metadata']['name']} has no port {name!r}"
    return ports[0]


def probes(container: dict) -> dict[str, dict]:
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    return {kind: container[kind] for kind in kinds if kind in container}


def health_service_names_in_source() -> tuple[str, set[str]]:
    """The liveness service name and every name the gateway sets a status for."""
    source = SERVER_RS.read_text(encoding="utf-8")
    liveness = re.search(r'pub const LIVENESS_SERVICE: &str = "([^"]*)";', source)
    assert liveness, f"LIVENESS_SERVICE is no longer defined in {SERVER_RS.name}"
    names = set(re.findall(r'set_service_status\(\s*"([^"]*)"', source))
    if re.search(r"set_service_status\(\s*LIVENESS_SERVICE", source):
        names.add(liveness.group(1))
    return liveness.group(1), names


# ---------------------------------------------------------------------------------------------
# The files themselves


def test_kustomization_lists_every_manifest_and_each_listed_file_exists(manifests):
    kustomization = only_one(manifests["kustomization.yaml"], "document in kustomization.yaml")
    resources = kustomization.get("resources", [])

    missing = [name for name in resources if not (KUBE_DIR / name).is_file()]
    assert not missing, f"kustomization.yaml lists files that do not exist: {missing}"
    unlisted = sorted(set(manifests) - set(resources) - NOT_APPLIED)
    assert not unlisted, f"manifests that kustomization.yaml does not apply: {unlisted}"
    assert "secret.example.yaml" not in resources, "the example Secret must not be applied"


def test_every_document_has_an_api_version_kind_and_name(manifests):
    for name, docs in manifests.items():
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), f"{name}: {doc}"
            if doc["kind"] != "Kustomization":
                assert doc.get("metadata", {}).get("name"), f"{name}: a {doc['kind']} has no name"


def test_service_pdb_and_hpa_point_at_the_deployment(manifests, deployment):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items(), "the Deployment's selector misses its pods"

    for service in applied_of_kind(manifests, "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items(), service["metadata"]
    pdb = only_one(applied_of_kind(manifests, "PodDisruptionBudget"), "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    hpa = only_one(applied_of_kind(manifests, "HorizontalPodAutoscaler"), "HPA")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2, "one replica leaves nothing to serve during a drain"
    resources = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert "cpu" in resources


# ---------------------------------------------------------------------------------------------
# Settings: what the manifests set is what the binary reads


def test_every_setting_named_in_the_image_and_the_manifests_is_a_flag_of_the_binary(
    container_env, example_secret, runtime_stage, help_text
):
    names = set(container_env) | set(example_secret.get("stringData", {}))
    names |= set(dockerfile_env(runtime_stage))
    settings = sorted(name for name in names if name.startswith(SETTING_PREFIXES))
    assert settings, "the manifests name no gateway settings at all"

    unknown = [
        name for name in settings if not re.search(rf"\[env: {re.escape(name)}[=\]]", help_text)
    ]
    assert not unknown, (
        f"environment variables set by the Dockerfile or deploy/kubernetes that "
        f"`commenda-sync-gateway --help` "
        f"does not list (the binary would ignore them): {unknown}"
    )


def test_secrets_come_from_the_secret_the_example_describes(container, example_secret):
    secret_name = example_secret["metadata"]["name"]
    example_values = example_secret.get("stringData", {})
    from_secret = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert {"COMMENDA_API_KEY", "GATEWAY_PAGE_TOKEN_SECRET"} <= set(from_secret)
    for variable, ref in from_secret.items():
        assert ref["name"] == secret_name, f"{variable} reads another Secret: {ref['name']}"
        assert ref["key"] in example_values, f"secret.example.yaml has no key {ref['key']}"
    for key, value in example_values.items():
        assert "example" in value.lower(), f"{key} in secret.example.yaml looks like a real value"


def test_settings_the_binary_keeps_secret_come_from_the_secret(
    container, configmap, help_text
):
    # clap prints `[env: NAME]` without `=` for the settings whose values it hides.
    hidden = set(re.findall(r"\[env: ([A-Z0-9_]+)\]", help_text))
    assert {"COMMENDA_API_KEY", "GATEWAY_PAGE_TOKEN_SECRET"} <= hidden, help_text

    in_configmap = sorted(hidden & set(configmap["data"]))
    assert not in_configmap, f"move these from the ConfigMap to the Secret: {in_configmap}"
    env = container.get("env", [])
    plain = sorted(e["name"] for e in env if e["name"] in hidden and "value" in e)
    assert not plain, f"these secret settings are written in the Deployment: {plain}"


# ---------------------------------------------------------------------------------------------
# Ports


def test_the_grpc_port_is_the_same_in_every_file(
    manifests, container, container_env, runtime_stage
):
    host, port = split_address(container_env["GATEWAY_LISTEN"])
    assert host not in LOOPBACK_HOSTS, "a pod must listen beyond loopback to be reachable"

    assert container_port(container, "grpc") == port
    for service in applied_of_kind(manifests, "Service"):
        grpc_port = service_port(service, "grpc")
        assert grpc_port.get("appProtocol") == "grpc", service["metadata"]["name"]
        assert resolve_target_port(container, grpc_port) == port, service["metadata"]["name"]
    for kind, probe in probes(container).items():
        assert probe["grpc"]["port"] == port, f"{kind} checks port {probe['grpc']['port']}"

    image_env = dockerfile_env(runtime_stage)
    assert image_env.get("GATEWAY_LISTEN") == container_env["GATEWAY_LISTEN"]
    assert port in dockerfile_exposed_ports(runtime_stage), "the Dockerfile does not EXPOSE it"


def test_the_binary_has_the_metrics_listen_flag_the_manifests_use(help_text):
    assert "--metrics-listen" in help_text and "GATEWAY_METRICS_LISTEN" in help_text, (
        "`commenda-sync-gateway --help` has no --metrics-listen [env: GATEWAY_METRICS_LISTEN]: "
        "the Dockerfile and deploy/kubernetes expect metrics on port 9090, which this binary "
        "would not serve"
    )


def test_the_metrics_port_is_the_same_in_every_file(
    manifests, container, container_env, deployment, runtime_stage
):
    host, port = split_address(container_env["GATEWAY_METRICS_LISTEN"])
    assert host not in LOOPBACK_HOSTS, "Prometheus scrapes the pod address, not loopback"

    assert container_port(container, "metrics") == port
    service = next(
        s for s in applied_of_kind(manifests, "Service") if s["spec"].get("clusterIP") != "None"
    )
    assert resolve_target_port(container, service_port(service, "metrics")) == port

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"

    image_env = dockerfile_env(runtime_stage)
    assert image_env.get("GATEWAY_METRICS_LISTEN") == container_env["GATEWAY_METRICS_LISTEN"]
    assert port in dockerfile_exposed_ports(runtime_stage), "the Dockerfile does not EXPOSE it"


def test_the_image_exposes_only_the_ports_the_deployment_declares(container, runtime_stage):
    declared = {p["containerPort"] for p in container["ports"]}
    assert dockerfile_exposed_ports(runtime_stage) == declared


# ---------------------------------------------------------------------------------------------
# Probes and shutdown


def test_probes_name_health_services_that_the_gateway_reports(container):
    liveness_name, reported = health_service_names_in_source()
    found = probes(container)
    assert {"livenessProbe", "readinessProbe"} <= set(found)

    assert found["livenessProbe"]["grpc"]["service"] == "liveness" == liveness_name
    readiness = found["readinessProbe"]["grpc"].get("service", "")
    assert readiness in reported, f"the gateway sets no health status for {readiness!r}"
    assert readiness != liveness_name, "readiness must follow the upstream and the drain"
    if "startupProbe" in found:
        # Startup must not wait on the upstream, or an upstream outage blocks every start.
        assert found["startupProbe"]["grpc"].get("service", "") == liveness_name


def test_the_probe_services_answer_serving_on_a_running_gateway(channel, container):
    stub = health_pb2_grpc.HealthStub(channel)
    for kind in ("livenessProbe", "readinessProbe"):
        service = container[kind]["grpc"].get("service", "")
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, (kind, service)


def test_the_grace_period_outlasts_the_pre_stop_pause_and_the_drain(
    pod_spec, container, container_env
):
    drain_ms = int(container_env["GATEWAY_DRAIN_TIMEOUT_MS"])
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    pre_stop_s = pre_stop.get("sleep", {}).get("seconds", 0)
    grace_ms = pod_spec["terminationGracePeriodSeconds"] * 1000

    assert grace_ms > drain_ms, f"grace {grace_ms} ms does not exceed the drain {drain_ms} ms"
    assert grace_ms > pre_stop_s * 1000 + drain_ms, (
        f"grace {grace_ms} ms does not cover the preStop pause ({pre_stop_s} s) and the "
        f"drain ({drain_ms} ms) that follows it"
    )


# ---------------------------------------------------------------------------------------------
# Privileges


def test_the_image_and_the_pod_run_as_a_non_root_user(runtime_stage, pod_spec, container):
    users = [arguments for keyword, arguments in runtime_stage if keyword == "USER"]
    assert users, "the runtime stage of the Dockerfile sets no USER, so it runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} should be a numeric non-root id"

    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security.get("runAsUser") == int(uid), "the pod and the image disagree on the user"

    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security.get("privileged", False)


def test_the_container_has_requests_and_limits(container):
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]), "the HPA needs a CPU request"
    assert "memory" in resources["limits"]
