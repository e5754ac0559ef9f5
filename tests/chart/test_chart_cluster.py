"""The chart on the local control plane (real helm, real kube-apiserver with RBAC and PodSecurity):
install, least privilege, restricted pods, the operator running as the chart's ServiceAccount,
upgrade with changed values and a changed CRD, uninstall.

The tests of this module run in order against one release (module-scoped fixture). The operator
runs as a local process (its image cannot be built here) authenticated with a TokenRequest token of
the chart's ServiceAccount, so every API call it makes is authorized by the chart's RBAC: a
forbidden call (403 in the operator log or in the API server's audit log) fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.cluster.local import wait_for

from ._helm import CHART, REPO
from .health_lua import argocd_health

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

RELEASE = "md"
FULLNAME = "md-modeldeploy"
CRD_NAME = "modeldeployments.modeldeploy.io"
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
EXAMPLE = REPO / "examples" / "cpu-minimal.yaml"
READY_TIMEOUT = 180.0
PUSH_KEY_SECRET = "modeldeploy-push-key"


@dataclass
class Operator:
    """`mdctl operator run` as a local process, authenticated as the chart's ServiceAccount."""

    proc: subprocess.Popen[str]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class Scenario:
    cluster: Any
    tmp: Path
    system_ns: str
    models_ns: str
    other_ns: str
    install_out: str = ""
    operators: list[Operator] = field(default_factory=list)
    audit_offset: int = 0
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sa_user(self) -> str:
        return f"system:serviceaccount:{self.system_ns}:{FULLNAME}"

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, **kw)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def can_i(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={self.sa_user}"]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        out = self.kubectl(*args, check=False)
        assert out.stdout.strip() in ("yes", "no"), out.stderr
        return out.stdout.strip() == "yes"

    def helm(self, *args: str) -> str:
        return str(self.cluster.helm(*args, timeout=300).stdout)

    def start_operator(self) -> Operator:
        from modeldeploy_runtime.ports import free_ports

        token = self.kubectl(
            "create", "token", FULLNAME, "-n", self.system_ns, "--duration=3600s"
        ).stdout.strip()
        assert token.count(".") == 2, "not a JWT from the TokenRequest API"
        n = len(self.operators)
        kubeconfig = self.cluster.kubeconfig_for_token(token, self.tmp / f"operator-{n}.kubeconfig")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        # POD_NAMESPACE: as the chart's Deployment sets it (where its push key Secret lives)
        env |= {"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", "POD_NAMESPACE": self.system_ns}
        env.pop("MODELDEPLOY_PUSH_KEY_FILE", None)
        log = self.tmp / f"operator-{n}.log"
        mdctl = Path(sys.executable).parent / "mdctl"
        health, metrics = free_ports(2)
        cmd = [
            str(mdctl), "operator", "run", "--namespace", self.models_ns, "--log-format", "text",
            "--metrics-port", str(metrics), "--health-port", str(health), "--bind-address", "127.0.0.1",
            "--no-query-agents",  # KWOK pods: their IPs lead nowhere
        ]  # fmt: skip
        with log.open("w") as fh:
            proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=env, cwd=self.tmp
            )
        op = Operator(proc, log)
        self.operators.append(op)

        def healthy() -> bool:
            assert proc.poll() is None, f"operator exited ({proc.returncode}):\n{op.text()[-4000:]}"
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy, 60, "the operator's /healthz")
        return op

    def audit_denials(self) -> list[str]:
        """Requests by the ServiceAccount the API server answered with 403 (the audit log holds writes)."""
        log = Path(self.cluster.audit_log)
        if not log.exists():
            return []
        out = []
        with log.open() as fh:
            fh.seek(self.audit_offset)
            for line in fh:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if (
                    ev.get("user", {}).get("username") == self.sa_user
                    and ev.get("responseStatus", {}).get("code") == 403
                ):
                    ref = ev.get("objectRef", {})
                    out.append(
                        f"{ev.get('verb')} {ref.get('apiGroup', '')}/{ref.get('resource')} in {ref.get('namespace')}"
                    )
        return out

    def assert_no_forbidden(self) -> None:
        for op in self.operators:
            text = op.text()
            # "403" as a word: a bare substring test also matched ephemeral ports such as :40365; the
            # log line's "[2026-... 16:34:41,403]" timestamp (milliseconds 403) is not looked at.
            lines = [re.sub(r"^\[[^]]*\]", "", ln) for ln in text.splitlines()]
            bad = [ln for ln in lines if re.search(r"\b403\b|forbidden", ln, re.IGNORECASE)]
            assert not bad, "the operator hit RBAC denials:\n" + "\n".join(bad[:20])
        assert not self.audit_denials(), f"403s for {self.sa_user}: {self.audit_denials()}"


def _ns(cluster: Any, prefix: str, restricted: bool) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    if restricted:
        cluster.kubectl(
            "label", "namespace", name,
            "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest",
        )  # fmt: skip
    return name


def _release_crd(cluster: Any, release_ns: str) -> None:
    """Hand the shared CRD to this release (the documented adoption of a CRD created outside Helm)."""
    if cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    cluster.kubectl("label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl(
        "annotate", "--overwrite", "crd", CRD_NAME,
        f"meta.helm.sh/release-name={RELEASE}", f"meta.helm.sh/release-namespace={release_ns}",
    )  # fmt: skip


def _restore_crd(cluster: Any) -> None:
    """Leave the CRD as crds/ defines it and owned by nobody, for the other tests of the session."""
    cluster.kubectl("annotate", "crd", CRD_NAME, "meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-",
                    "helm.sh/resource-policy-", check=False)  # fmt: skip
    cluster.kubectl("label", "crd", CRD_NAME, "app.kubernetes.io/managed-by-", "helm.sh/chart-",
                    "app.kubernetes.io/instance-", "app.kubernetes.io/version-", "app.kubernetes.io/component-",
                    check=False)  # fmt: skip
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=modeldeploy-tests", "-f",
                    str(CRD_FILE), check=False)  # fmt: skip


@pytest.fixture(scope="module")
def scenario(
    cluster: Any, shared_crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    # shared_crds: the KEDA / prometheus-operator CRDs, whose kinds the chart's RBAC covers (can-i
    # answers "no" for a resource type the API server does not know).
    tmp = tmp_path_factory.mktemp("chart-cluster")
    s = Scenario(
        cluster=cluster,
        tmp=tmp,
        system_ns=_ns(cluster, "mdsys", restricted=True),
        models_ns=_ns(cluster, "models", restricted=True),
        other_ns=_ns(cluster, "unrelated", restricted=False),
    )
    log = Path(cluster.audit_log)
    s.audit_offset = log.stat().st_size if log.exists() else 0
    _release_crd(cluster, s.system_ns)
    values = {"watchNamespaces": [s.models_ns], "operator": {"logFormat": "text"}}
    (tmp / "values.yaml").write_text(yaml.safe_dump(values))
    try:
        s.install_out = s.helm(
            "install", RELEASE, str(CHART), "-n", s.system_ns, "-f", str(tmp / "values.yaml"),
            "--wait", "--timeout", "180s",
        )  # fmt: skip
        yield s
    finally:
        for op in s.operators:
            op.stop()
        for name in json.loads(
            cluster.kubectl("get", "md", "-n", s.models_ns, "-o", "json", check=False).stdout or "{}"
        ).get("items", []):
            cluster.kubectl("patch", "md", name["metadata"]["name"], "-n", s.models_ns, "--type=merge",
                            "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
        cluster.helm("uninstall", RELEASE, "-n", s.system_ns, "--wait", check=False)
        _restore_crd(cluster)
        for ns in (s.models_ns, s.other_ns, s.system_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for op in s.operators:
            print(f"--- {op.log.name} (tail)\n{op.text()[-3000:]}")


def test_install_creates_everything(scenario: Scenario) -> None:
    s = scenario
    assert "STATUS: deployed" in s.install_out
    assert f"Watching:   {s.models_ns}" in s.install_out  # NOTES.txt
    crd = s.get("crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == s.system_ns
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    s.get("serviceaccount", FULLNAME, "-n", s.system_ns)
    s.get("service", f"{FULLNAME}-metrics", "-n", s.system_ns)
    role = s.get("role", FULLNAME, "-n", s.models_ns)
    assert any("modeldeployments" in r["resources"] for r in role["rules"])
    s.get("rolebinding", FULLNAME, "-n", s.models_ns)
    cr = s.get("clusterrole", f"{s.system_ns}-{FULLNAME}")
    assert [r["resources"] for r in cr["rules"]] == [["customresourcedefinitions"]]
    dep = s.get("deployment", FULLNAME, "-n", s.system_ns)
    assert dep["status"].get("readyReplicas") == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"


def test_chart_pods_are_admitted_under_restricted(scenario: Scenario) -> None:
    s = scenario
    pods = s.get("pods", "-n", s.system_ns, "-l", "app.kubernetes.io/instance=md")["items"]
    assert len(pods) == 1, "the operator pod was not created in the restricted namespace"
    events = s.get("events", "-n", s.system_ns, "--field-selector", "reason=FailedCreate")["items"]
    assert not events, [e["message"] for e in events]
    # The same pod spec, created directly (server-side dry run): admission answers synchronously.
    template = s.get("deployment", FULLNAME, "-n", s.system_ns)["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", **{k: v for k, v in template["metadata"].items() if k == "labels"}},
        "spec": template["spec"],
    }
    out = s.kubectl(
        "create", "--dry-run=server", "-n", s.system_ns, "-f", "-", input=json.dumps(pod), check=False
    )
    assert out.returncode == 0 and "violate" not in out.stderr, out.stderr
    # Control: the namespace really enforces restricted.
    bad = json.loads(json.dumps(pod))
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    out = s.kubectl(
        "create", "--dry-run=server", "-n", s.system_ns, "-f", "-", input=json.dumps(bad), check=False
    )
    assert out.returncode != 0 and 'violates PodSecurity "restricted' in out.stderr, out.stderr


def test_serviceaccount_is_least_privileged(scenario: Scenario) -> None:
    s = scenario
    m, o, sys_ns = s.models_ns, s.other_ns, s.system_ns
    allowed = [
        ("list", "modeldeployments.modeldeploy.io", m),
        ("patch", "modeldeployments.modeldeploy.io/status", m),
        ("create", "deployments.apps", m),
        ("delete", "services", m),
        ("patch", "configmaps", m),
        ("create", "horizontalpodautoscalers.autoscaling", m),
        ("create", "poddisruptionbudgets.policy", m),
        ("watch", "pods", m),
        ("create", "events", m),
        ("create", "events.events.k8s.io", m),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("create", "scaledobjects.keda.sh", m),  # integrations, enabled by default
        ("create", "httpscaledobjects.http.keda.sh", m),  # KEDA HTTP add-on: scale from zero on a request
        ("create", "jobs.batch", m),  # prefetch Jobs of the shared model cache (spec.cache)
        ("patch", "servicemonitors.monitoring.coreos.com", m),
        # its push signing key Secret in its own namespace: read by name, created on first start
        ("get", f"secrets/{PUSH_KEY_SECRET}", sys_ns),
        ("create", "secrets", sys_ns),
    ]
    denied = [
        # no Secret at all in the namespaces it manages (nothing per ModelDeployment any more)
        ("get", "secrets", m),
        ("get", f"secrets/{PUSH_KEY_SECRET}", m),
        ("create", "secrets", m),
        ("list", "secrets", m),
        ("watch", "secrets", m),
        ("update", "secrets", m),
        ("delete", "secrets", m),
        ("get", "secrets", sys_ns),
        ("get", "secrets/other", sys_ns),
        ("list", "secrets", sys_ns),
        ("watch", "secrets", sys_ns),
        ("update", "secrets", sys_ns),
        ("delete", "secrets", sys_ns),
        ("get", "secrets", "kube-system"),
        ("list", "secrets", None),
        ("create", "deployments.apps", o),  # watchNamespaces: only the models namespace
        ("list", "modeldeployments.modeldeploy.io", o),
        ("create", "pods", m),
        ("delete", "pods", m),
        ("update", "modeldeployments.modeldeploy.io", m),
        ("delete", "modeldeployments.modeldeploy.io", m),
        ("create", "statefulsets.apps", m),
        ("create", "cronjobs.batch", m),
        ("create", "jobs.batch", o),
        ("create", "roles.rbac.authorization.k8s.io", m),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("list", "nodes", None),
        ("delete", "namespaces", None),
        ("create", "serviceaccounts/token", m),
        ("impersonate", "users", None),
    ]
    wrong = [f"{v} {r} in {n}: expected yes" for v, r, n in allowed if not s.can_i(v, r, n)]
    wrong += [f"{v} {r} in {n}: expected no" for v, r, n in denied if s.can_i(v, r, n)]
    assert not wrong, "\n".join(wrong)


def _md(s: Scenario) -> dict[str, Any]:
    return s.get("md", "add-sub", "-n", s.models_ns)


def _ready(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    return conds.get("Ready") == "True" and st.get("observedGeneration") == obj["metadata"]["generation"]


def test_operator_reconciles_to_ready_as_the_serviceaccount(scenario: Scenario) -> None:
    s = scenario
    s.start_operator()
    # Credentials referenced by the example (never read by the operator: it has no Secret access).
    s.kubectl("create", "secret", "generic", "model-store", "-n", s.models_ns,
              "--from-literal=AWS_ACCESS_KEY_ID=test", "--from-literal=AWS_SECRET_ACCESS_KEY=test-secret")  # fmt: skip
    s.kubectl("apply", "-n", s.models_ns, "-f", str(EXAMPLE))

    def ready() -> bool:
        obj = _md(s)
        s.statuses.append(obj)
        return _ready(obj)

    wait_for(ready, READY_TIMEOUT, "ModelDeployment add-sub Ready=True", interval=0.5)
    s.assert_no_forbidden()
    # The operator's pods were admitted in the restricted namespace.
    pods = s.get("pods", "-n", s.models_ns)["items"]
    assert pods, "the operator created no pods"
    events = s.get("events", "-n", s.models_ns, "--field-selector", "reason=FailedCreate")["items"]
    assert not events, [e["message"] for e in events]
    for p in pods:
        out = s.kubectl("create", "--dry-run=server", "-n", s.models_ns, "-f", "-", check=False,
                        input=json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": p["spec"] | {"nodeName": None}}))  # fmt: skip
        assert out.returncode == 0, out.stderr
    # No secret value leaked into the status or events.
    assert "test-secret" not in json.dumps(_md(s))
    assert "test-secret" not in s.kubectl("get", "events", "-n", s.models_ns, "-o", "json").stdout
    # No Secret per ModelDeployment: the operator made only its push signing key, in its namespace,
    # and its public half is in the manifest ConfigMap.
    uid = _md(s)["metadata"]["uid"]
    owned = [
        x["metadata"]["name"]
        for x in s.get("secrets", "-n", s.models_ns)["items"]
        if any(r.get("uid") == uid for r in x["metadata"].get("ownerReferences") or [])
    ]
    assert not owned, owned
    key = s.get("secret", PUSH_KEY_SECRET, "-n", s.system_ns)
    assert set(key["data"]) == {"push.key"} and key["immutable"] is True
    cm = s.get("configmap", "add-sub-models", "-n", s.models_ns)
    assert cm["data"]["push-key.pub"].startswith("-----BEGIN PUBLIC KEY-----")


def test_argocd_health_on_operator_statuses(scenario: Scenario) -> None:
    """The Lua health check over every status the operator wrote on the way to Ready: Progressing
    (never Degraded) until the end, then Healthy."""
    s = scenario
    assert s.statuses, "run after test_operator_reconciles_to_ready_as_the_serviceaccount"
    verdicts = [argocd_health(o)["status"] for o in s.statuses]
    assert verdicts[-1] == "Healthy", argocd_health(s.statuses[-1])
    assert "Degraded" not in verdicts, verdicts
    # A spec change the operator has not observed yet is Progressing, whatever the conditions say.
    stale = json.loads(json.dumps(s.statuses[-1]))
    stale["metadata"]["generation"] += 1
    assert argocd_health(stale)["status"] == "Progressing"


def test_argocd_health_degraded_from_operator_status(scenario: Scenario) -> None:
    """A ModelDeployment that cannot be scheduled (more GPUs per pod than any node has): the operator
    reports Degraded=True, and the Lua check says Degraded with the operator's message."""
    s = scenario
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = "too-big"
    doc["spec"]["resources"]["gpu"] = 16  # the KWOK GPU nodes have 8 each
    s.kubectl("apply", "-n", s.models_ns, "-f", "-", input=json.dumps(doc))

    def degraded() -> dict[str, Any] | None:
        obj = s.get("md", "too-big", "-n", s.models_ns)
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        return obj if conds.get("Degraded", {}).get("status") == "True" else None

    obj = wait_for(degraded, READY_TIMEOUT, "ModelDeployment too-big Degraded=True")
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    assert argocd_health(obj) == {"status": "Degraded", "message": cond["message"]}
    s.assert_no_forbidden()
    s.kubectl("delete", "md", "too-big", "-n", s.models_ns, "--wait=true", timeout=120)
    # Its children go by (background) garbage collection: wait, so later tests see a settled namespace.
    wait_for(
        lambda: (
            not [
                o
                for kind in ("deployments", "pods")
                for o in s.get(kind, "-n", s.models_ns)["items"]
                if o["metadata"]["name"].startswith("too-big")
            ]
        ),
        120,
        "the children of too-big to be garbage-collected",
    )


def _triton_state(s: Scenario) -> dict[str, Any]:
    deps = s.get("deployments", "-n", s.models_ns)["items"]
    pods = s.get("pods", "-n", s.models_ns)["items"]
    assert deps and pods
    return {
        "deployments": {
            d["metadata"]["name"]: (d["metadata"]["uid"], d["metadata"]["generation"]) for d in deps
        },
        "pods": sorted((p["metadata"]["name"], p["metadata"]["uid"]) for p in pods),
        "restarts": sum(
            cs.get("restartCount", 0) for p in pods for cs in p["status"].get("containerStatuses") or []
        ),
    }


def test_upgrade_with_changed_values_and_crd_leaves_models_untouched(scenario: Scenario) -> None:
    s = scenario
    before = _triton_state(s)
    md_before = _md(s)
    # A newer chart: version bump and a CRD change (an extra printer column).
    chart = s.tmp / "chart-next"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    (chart / "Chart.yaml").write_text(
        (chart / "Chart.yaml").read_text().replace(f"version: {meta['version']}", "version: 0.1.1-next")
    )
    tpl = chart / "templates" / "crd-modeldeployments.yaml"
    text = tpl.read_text()
    marker = "    additionalPrinterColumns:\n"
    assert marker in text
    text = text.replace(
        marker,
        marker
        + "    - jsonPath: .status.observedGeneration\n      name: Observed\n      priority: 1\n      type: integer\n",
        1,
    )
    tpl.write_text(text)
    values = {
        "watchNamespaces": [],
        "operator": {"logFormat": "json"},
        "resources": {"limits": {"memory": "768Mi"}},
    }
    (s.tmp / "values-next.yaml").write_text(yaml.safe_dump(values))
    out = s.helm(
        "upgrade",
        RELEASE,
        str(chart),
        "-n",
        s.system_ns,
        "-f",
        str(s.tmp / "values-next.yaml"),
        "--wait",
        "--timeout",
        "180s",
    )
    assert "STATUS: deployed" in out and "REVISION: 2" in out
    crd = s.get("crd", CRD_NAME)
    cols = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert "Observed" in cols, "helm upgrade did not update the CRD"
    assert crd["metadata"]["labels"]["helm.sh/chart"] == "modeldeploy-0.1.1-next"
    # Changed values: all namespaces -> a ClusterRole with every rule, the Roles are gone.
    cr = s.get("clusterrole", f"{s.system_ns}-{FULLNAME}")
    assert any("modeldeployments" in r["resources"] for r in cr["rules"])
    assert s.kubectl("get", "role", FULLNAME, "-n", s.models_ns, check=False).returncode != 0
    dep = s.get("deployment", FULLNAME, "-n", s.system_ns)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--all-namespaces" in c["args"] and "--log-format=json" in c["args"]
    assert c["resources"]["limits"]["memory"] == "768Mi"
    assert s.can_i("create", "deployments.apps", s.other_ns)
    # The operator restarts (Recreate) and must leave the running models alone; it signs with the
    # same key (the Secret it made on its first start, read back).
    key_before = s.get("secret", PUSH_KEY_SECRET, "-n", s.system_ns)
    pub_before = s.get("configmap", "add-sub-models", "-n", s.models_ns)["data"]["push-key.pub"]
    for op in s.operators:
        op.stop()
    s.start_operator()
    time.sleep(15)  # a few reconcile/resume cycles
    after = _triton_state(s)
    assert after == before, "the operator upgrade touched the Triton Deployments/pods"
    key_after = s.get("secret", PUSH_KEY_SECRET, "-n", s.system_ns)
    assert key_after["metadata"]["uid"] == key_before["metadata"]["uid"]
    assert s.get("configmap", "add-sub-models", "-n", s.models_ns)["data"]["push-key.pub"] == pub_before
    md_after = _md(s)
    assert md_after["metadata"]["generation"] == md_before["metadata"]["generation"]
    assert _ready(md_after)
    assert argocd_health(md_after)["status"] == "Healthy"
    s.assert_no_forbidden()


def test_uninstall_keeps_crd_and_modeldeployments(scenario: Scenario) -> None:
    s = scenario
    for op in s.operators:
        op.stop()
    out = s.helm("uninstall", RELEASE, "-n", s.system_ns, "--wait")
    assert "kept due to the resource policy" in out or "uninstalled" in out
    assert s.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0, "the CRD was deleted"
    assert _md(s)["metadata"]["name"] == "add-sub"
    for kind, name, ns in [
        ("deployment", FULLNAME, s.system_ns),
        ("serviceaccount", FULLNAME, s.system_ns),
        ("service", f"{FULLNAME}-metrics", s.system_ns),
        ("clusterrole", f"{s.system_ns}-{FULLNAME}", None),
        ("clusterrolebinding", f"{s.system_ns}-{FULLNAME}", None),
    ]:
        args = ["get", kind, name] + (["-n", ns] if ns else [])
        assert s.kubectl(*args, check=False).returncode != 0, f"{kind}/{name} survived helm uninstall"
    # Triton Deployments of the ModelDeployment keep serving.
    assert s.get("deployments", "-n", s.models_ns)["items"]
