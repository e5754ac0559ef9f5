"""helm lint / helm template of charts/modeldeploy: defaults, every option, least-privilege RBAC,
restricted pod security, and the values schema (no cluster needed; the pinned helm is required)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import modeldeploy_runtime

from ._helm import ALL_VALUES, CHART, KUBE_VERSION, REPO, find, helm, one, render, rules_table, template_args

RW = {"get", "list", "watch", "create", "patch", "delete"}
#: The operator's API usage (the cross-team contract): the chart must grant exactly this.
NAMESPACED_RULES: dict[tuple[str, str], set[str]] = {
    ("modeldeploy.io", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("modeldeploy.io", "modeldeployments/status"): {"get", "patch"},
    ("modeldeploy.io", "modeldeployments/finalizers"): {"update"},
    ("", "configmaps"): RW,
    ("", "services"): RW,
    ("networking.k8s.io", "networkpolicies"): RW,
    ("apps", "deployments"): RW,
    ("autoscaling", "horizontalpodautoscalers"): RW,
    ("policy", "poddisruptionbudgets"): RW,
    ("batch", "jobs"): RW,  # prefetch Jobs of the shared model cache
    ("", "pods"): {"get", "list", "watch"},
    # no Secrets in the namespaces it manages (the push signing key: PUSH_KEY_RULES)
    ("apps", "replicasets"): {"list"},  # rolling: which revisions' manifest ConfigMaps still have pods
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
#: The release namespace only: its own push signing key Secret, read by name, created on first start.
PUSH_KEY_SECRET = "modeldeploy-push-key"
PUSH_KEY_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [PUSH_KEY_SECRET], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
]
CLUSTER_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}
KEDA_RULES = {("keda.sh", "scaledobjects"): RW, ("http.keda.sh", "httpscaledobjects"): RW}
MONITORING_RULES = {("monitoring.coreos.com", "servicemonitors"): RW}


def namespaced_roles(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles of the watched namespaces (not the push key Role of the release namespace)."""
    return [r for r in find(objs, "Role") if not r["metadata"]["name"].endswith("-push-key")]


def assert_push_key_role(objs: list[dict[str, Any]], namespace: str, sa: str) -> None:
    (role,) = [r for r in find(objs, "Role") if r["metadata"]["name"].endswith("-push-key")]
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == PUSH_KEY_RULES
    (binding,) = [b for b in find(objs, "RoleBinding") if b["metadata"]["name"].endswith("-push-key")]
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = one(objs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def _env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


@pytest.mark.parametrize("values_files", [(), (ALL_VALUES,)], ids=["defaults", "all-values"])
def test_lint(values_files: tuple[Path, ...]) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["-f", str(f)]
    out = helm(*args)
    assert "0 chart(s) failed" in out.stdout


def test_chart_versions_follow_the_package() -> None:
    version = modeldeploy_runtime.__version__
    assert importlib.metadata.version("modeldeploy") == version, "reinstall: the metadata is stale"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version, "Chart.yaml appVersion must equal the package version"
    assert chart["version"] == version, "Chart.yaml version must equal the package version"


def test_defaults_render_expected_objects() -> None:
    objs = render()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",  # the push signing key Secret in the release namespace
            "RoleBinding",
            "Deployment",
            "Service",
            "NetworkPolicy",
            *(["CustomResourceDefinition"] * len(list((REPO / "crds").glob("*.yaml")))),
        ]
    )
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for o in objs:
        labels = o["metadata"]["labels"]
        assert labels["helm.sh/chart"] == f"modeldeploy-{chart['version']}", o["kind"]
        assert labels["app.kubernetes.io/name"] == "modeldeploy"
        assert labels["app.kubernetes.io/instance"] == "md"
        assert labels["app.kubernetes.io/version"] == chart["appVersion"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert o["metadata"]["namespace"] == "modeldeploy-system", o["kind"]


def test_operator_deployment_defaults() -> None:
    objs = render()
    dep = one(objs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"]
    assert set(spec["selector"]["matchLabels"].items()) <= set(spec["template"]["metadata"]["labels"].items())
    c = _container(objs)
    assert c["image"] == "ghcr.io/modeldeploy/operator:0.1.0"
    assert c["args"] == [
        "operator",
        "run",
        "--all-namespaces",
        "--log-format=json",
        "--metrics-port=8080",
        "--health-port=8081",
        "--query-agents",  # the default: status from the agents, manifests pushed
        "--keda-interceptor=keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local:8080",
        "--workers=16",  # the work queue's bound
        "--status-workers=8",  # the status refreshes' threads
    ]
    env = _env(c)
    assert env["MODELDEPLOY_RUNTIME_IMAGE"] == "ghcr.io/modeldeploy/runtime:0.1.0"
    assert env["MODELDEPLOY_RUNTIME_LLM_IMAGE"] == "ghcr.io/modeldeploy/runtime-llm:0.1.0"
    assert "MODELDEPLOY_TRITON_IMAGE" not in env  # empty value: the operator's built-in default
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    svc = one(objs, "Service")
    assert svc["spec"]["ports"][0]["port"] == 8080
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]


@pytest.mark.parametrize("values_files", [(), (ALL_VALUES,)], ids=["defaults", "all-values"])
def test_pod_meets_restricted_pod_security(values_files: tuple[Path, ...]) -> None:
    """The PodSecurity "restricted" profile, checked field by field (admission is tested in the
    cluster tests); plus a read-only root filesystem."""
    objs = render(files=values_files)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for v in pod.get("volumes", []):
        assert set(v) - {"name"} <= {"emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim"}
    c = _container(objs)
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged") in (None, False)
    assert psc.get("runAsUser", 1) != 0 and sc.get("runAsUser", 1) != 0
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_all_values_render_every_option(tmp_path: Path) -> None:
    objs = render(files=(ALL_VALUES,), namespace="mdsys")
    opts = yaml.safe_load(ALL_VALUES.read_text())
    dep = one(objs, "Deployment")
    assert dep["metadata"]["name"] == "modeldeploy-ops"
    assert dep["metadata"]["labels"]["team"] == "ml-platform"
    assert dep["metadata"]["labels"]["app.kubernetes.io/name"] == "mdp"
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["example.com/tier"] == "control-plane"
    assert pod["metadata"]["annotations"] == opts["podAnnotations"]
    ps = pod["spec"]
    assert ps["imagePullSecrets"] == [{"name": "regcred"}]
    assert ps["priorityClassName"] == "system-cluster-critical"
    assert ps["nodeSelector"] == opts["nodeSelector"]
    assert ps["tolerations"] == opts["tolerations"]
    assert ps["affinity"] == opts["affinity"]
    assert ps["serviceAccountName"] == "md-operator"
    assert ps["securityContext"]["runAsUser"] == 10001
    c = _container(objs)
    assert c["image"] == f"registry.example.com/mirror/modeldeploy-operator@{opts['image']['digest']}"
    assert c["imagePullPolicy"] == "Always"
    assert c["args"] == [
        "operator",
        "run",
        "--namespace=models-a",
        "--namespace=models-b",
        "--log-format=text",
        "--metrics-port=9090",
        "--health-port=9091",
        "--no-query-agents",  # all-values turns it off (operator cannot reach pod IPs)
        f"--keda-interceptor={opts['operator']['kedaHttpInterceptor']}",
        "--workers=24",
        "--status-workers=4",
        *opts["operator"]["extraArgs"],
    ]
    env = _env(c)
    assert env["MODELDEPLOY_TRITON_IMAGE"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
    assert env["MODELDEPLOY_RUNTIME_IMAGE"] == "registry.example.com/mirror/modeldeploy-runtime:0.1.0-rc1"
    assert (
        env["MODELDEPLOY_RUNTIME_LLM_IMAGE"]
        == "registry.example.com/mirror/modeldeploy-runtime-llm:0.1.0-rc1"
    )
    assert env["HTTPS_PROXY"] == "http://proxy.example.com:3128"
    assert c["livenessProbe"]["periodSeconds"] == 30 and c["readinessProbe"]["failureThreshold"] == 2
    assert c["resources"] == opts["resources"]
    sa = one(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == opts["serviceAccount"]["annotations"]
    svc = one(objs, "Service")
    assert svc["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    ]
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    for crd in find(objs, "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_rbac_all_namespaces_is_exactly_the_contract() -> None:
    objs = render()
    assert not namespaced_roles(objs)
    assert_push_key_role(objs, "modeldeploy-system", "md-modeldeploy")
    cr = one(objs, "ClusterRole")
    assert rules_table(cr["rules"]) == NAMESPACED_RULES | CLUSTER_RULES | KEDA_RULES | MONITORING_RULES
    crb = one(objs, "ClusterRoleBinding")
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cr["metadata"]["name"],
    }
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": "md-modeldeploy", "namespace": "modeldeploy-system"}
    ]
    # Cluster-scoped names include the release namespace: two releases never clash.
    assert cr["metadata"]["name"] == "modeldeploy-system-md-modeldeploy"


def test_rbac_watch_namespaces_uses_roles() -> None:
    objs = render(files=(ALL_VALUES,), namespace="mdsys")
    cr = one(objs, "ClusterRole")
    assert rules_table(cr["rules"]) == CLUSTER_RULES
    roles = namespaced_roles(objs)
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["models-a", "models-b"]
    for role in roles:
        assert rules_table(role["rules"]) == NAMESPACED_RULES | MONITORING_RULES  # keda disabled
    bindings = [b for b in find(objs, "RoleBinding") if not b["metadata"]["name"].endswith("-push-key")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["models-a", "models-b"]
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "md-operator", "namespace": "mdsys"}]
    assert_push_key_role(objs, "mdsys", "md-operator")


@pytest.mark.parametrize(
    ("integrations", "extra"),
    [
        ({"keda": {"enabled": False}}, MONITORING_RULES),
        ({"prometheusOperator": {"enabled": False}}, KEDA_RULES),
        ({"keda": {"enabled": False}, "prometheusOperator": {"enabled": False}}, {}),
    ],
    ids=["no-keda", "no-prometheus-operator", "neither"],
)
def test_rbac_integrations_only_when_enabled(
    tmp_path: Path, integrations: dict[str, Any], extra: dict[tuple[str, str], set[str]]
) -> None:
    objs = render({"integrations": integrations}, tmp=tmp_path)
    assert rules_table(one(objs, "ClusterRole")["rules"]) == NAMESPACED_RULES | CLUSTER_RULES | extra


@pytest.mark.parametrize("values_files", [(), (ALL_VALUES,)], ids=["defaults", "all-values"])
def test_rbac_has_no_wildcards_and_reads_no_secrets_in_bulk(values_files: tuple[Path, ...]) -> None:
    objs = render(files=values_files)
    rules = [r for o in objs if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]
    assert rules
    for r in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in r[field], f"wildcard in {field}: {r}"
    # Secrets: only the push key rules of the release namespace's Role (get by name, create);
    # nothing in a ClusterRole or a watched namespace's Role, never list/watch/update/delete.
    for o in objs:
        if o["kind"] not in ("Role", "ClusterRole"):
            continue
        secret_rules = [r for r in o["rules"] if "secrets" in r["resources"]]
        if o["kind"] == "Role" and o["metadata"]["name"].endswith("-push-key"):
            assert o["rules"] == PUSH_KEY_RULES, o
        else:
            assert not secret_rules, o
    for r in rules:
        assert not {"escalate", "bind", "impersonate", "update"} & set(r["verbs"]) or r["resources"] == [
            "modeldeployments/finalizers"
        ], r


def test_rbac_and_serviceaccount_can_be_disabled(tmp_path: Path) -> None:
    objs = render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "byo"}}, tmp=tmp_path
    )
    assert not [
        o
        for o in objs
        if o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    ]
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "byo"


def test_serviceaccount_name_required_when_not_created(tmp_path: Path) -> None:
    vf = tmp_path / "v.yaml"
    vf.write_text(yaml.safe_dump({"serviceAccount": {"create": False}}))
    proc = helm(*template_args(files=(vf,)), check=False)
    assert proc.returncode != 0
    assert "serviceAccount.name is required when serviceAccount.create is false" in proc.stderr


def test_image_tag_and_metrics_service_toggle(tmp_path: Path) -> None:
    objs = render({"image": {"tag": "9.9.9"}, "metrics": {"service": {"enabled": False}}}, tmp=tmp_path)
    assert _container(objs)["image"] == "ghcr.io/modeldeploy/operator:9.9.9"
    assert not find(objs, "Service")


def test_servicemonitor_needs_the_service(tmp_path: Path) -> None:
    vf = tmp_path / "v.yaml"
    vf.write_text(
        yaml.safe_dump({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})
    )
    proc = helm(*template_args(files=(vf,)), check=False)
    assert proc.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in proc.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"crds": {"enabled": True, "keep": True, "keeep": True}},
            "at '/crds': additional properties 'keeep' not allowed",
        ),
        ({"unknownTopLevel": 1}, "additional properties 'unknownTopLevel' not allowed"),
        ({"metrics": {"port": 0}}, "at '/metrics/port': minimum: got 0, want 1"),
        ({"health": {"port": 70000}}, "at '/health/port': maximum: got 70,000, want 65,535"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy': value must be one of"),
        ({"operator": {"logFormat": "xml"}}, "at '/operator/logFormat': value must be one of 'json', 'text'"),
        ({"operator": {"workers": 0}}, "at '/operator/workers'"),
        ({"operator": {"statusWorkers": 0}}, "at '/operator/statusWorkers'"),
        ({"watchNamespaces": "models"}, "at '/watchNamespaces': got string, want array"),
        ({"watchNamespaces": ["Bad_NS"]}, "at '/watchNamespaces/0'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "at '/resources/requests/cpu'"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "at '/metrics/serviceMonitor/interval'"),
        ({"imagePullSecrets": ["regcred"]}, "at '/imagePullSecrets/0': got string, want object"),
        ({"rbac": {"create": "yes"}}, "at '/rbac/create': got string, want boolean"),
    ],
)
def test_schema_rejects_bad_values(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    vf = tmp_path / "bad.yaml"
    vf.write_text(yaml.safe_dump(values))
    proc = helm(*template_args(files=(vf,)), check=False)
    assert proc.returncode != 0, f"schema accepted {values}"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def _schema_objects(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            found.append((path or "/", node))
        for k, v in node.items():
            found += _schema_objects(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _schema_objects(v, f"{path}/{i}")
    return found


def test_schema_is_closed_and_covers_values_yaml() -> None:
    """Every object the schema describes rejects unknown keys, and every key of values.yaml is in
    the schema (so defaults never fail validation and the schema never lags behind)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = _schema_objects(schema)
    assert objects
    for path, node in objects:
        if path.endswith("/operator/properties/extraEnv/items"):
            continue  # Kubernetes EnvVar objects, validated by the API server
        assert node.get("additionalProperties") is False, f"{path}: additionalProperties must be false"

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for k, v in values.items():
            assert k in node.get("properties", {}), (
                f"values.yaml key {path}{k} is missing from values.schema.json"
            )
            child = node["properties"][k]
            if isinstance(v, dict) and "properties" in child:
                walk(v, child, f"{path}{k}.")

    walk(yaml.safe_load((CHART / "values.yaml").read_text()), schema, "")


def test_values_yaml_documents_every_leaf() -> None:
    """Every leaf value in values.yaml has a comment directly above it or above one of its parents."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    prev = ""
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("-") or ":" not in s:
            prev = s if s else prev
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = prev.startswith("#") or any(d for _, d in stack)
        key, _, value = s.partition(":")
        if value.strip():
            if not documented:
                undocumented.append(f"values.yaml:{n}: {key}")
        else:
            stack.append((indent, documented))
        prev = s
    assert not undocumented, "undocumented values:\n" + "\n".join(undocumented)


def test_operator_network_policy(tmp_path: Path) -> None:
    """Issue #15: egress to the API server, DNS and the agents' port; ingress only to metrics from
    the listed namespaces (none by default)."""
    (pol,) = [o for o in render() if o["kind"] == "NetworkPolicy"]
    spec = pol["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert not spec.get("ingress")  # no rule: no pod may connect
    to_ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert to_ports == {("TCP", 443), ("TCP", 6443), ("TCP", 8080), ("UDP", 53), ("TCP", 53)}
    agents = next(r for r in spec["egress"] if r["ports"] == [{"protocol": "TCP", "port": 8080}])
    assert agents["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "triton"
    (pol,) = [o for o in render(files=(ALL_VALUES,)) if o["kind"] == "NetworkPolicy"]
    (rule,) = pol["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9090}]
    api = pol["spec"]["egress"][0]
    assert [b["ipBlock"]["cidr"] for b in api["to"]] == ["10.96.0.1/32", "192.168.0.10/32"]
    off = render(values={"networkPolicy": {"enabled": False}}, tmp=tmp_path)
    assert not [o for o in off if o["kind"] == "NetworkPolicy"]
