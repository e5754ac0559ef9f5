"""The ModelDeployment API on the real API server (local control plane): examples accepted,
every invalid manifest rejected with a message naming the field, round trip without a defaults
fight, kubectl explain / printer columns / short names / scale subresource."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import v1alpha1 as api

from .catalogue import REPO, example_paths, load_example, load_invalid_cases, valid_paths

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
INVALID = load_invalid_cases()
EXAMPLES = example_paths()
ACCEPTED = EXAMPLES + valid_paths()


def kubectl_apply(
    cluster: Any, ns: str, obj: dict[str, Any] | str, *extra: str
) -> subprocess.CompletedProcess[str]:
    text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
    return cluster.kubectl("apply", "-n", ns, *extra, "-f", "-", input=text, check=False)


def get_json(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", f"{api.PLURAL}.{api.GROUP}", name, "-n", ns, "-o", "json")
    return json.loads(out.stdout)


def create(cluster: Any, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
    out = cluster.kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=json.dumps(obj))
    return json.loads(out.stdout)


@pytest.mark.parametrize("path", ACCEPTED, ids=[p.stem for p in ACCEPTED])
def test_example_accepted(cluster: Any, api_ns: str, path: Path) -> None:
    out = cluster.kubectl("apply", "-n", api_ns, "--dry-run=server", "-f", str(path), check=False)
    assert out.returncode == 0, f"{path.name} rejected:\n{out.stderr}"
    assert "created (server dry run)" in out.stdout


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_rejected_by_api_server(cluster: Any, api_ns: str, case: Any) -> None:
    docs = [dict(d) for d in case.docs]
    if case.is_update:
        suffix = uuid.uuid4().hex[:5]
        for d in docs:
            d["metadata"] = {**d["metadata"], "name": f"{d['metadata']['name']}-{suffix}"}
        first = kubectl_apply(cluster, api_ns, docs[0])
        assert first.returncode == 0, f"{case.id}: the initial object was rejected:\n{first.stderr}"
        out = kubectl_apply(cluster, api_ns, docs[1])
    else:
        out = kubectl_apply(cluster, api_ns, docs[0], "--dry-run=server")
    assert out.returncode != 0, f"{case.id} ({case.description}) was accepted:\n{out.stdout}"
    err = out.stderr
    assert case.field in err, f"{case.id}: the error does not name {case.field}:\n{err}"
    assert case.message in err, f"{case.id}: expected {case.message!r} in:\n{err}"


@pytest.mark.parametrize("path", ACCEPTED, ids=[p.stem for p in ACCEPTED])
def test_round_trip(cluster: Any, api_ns: str, path: Path) -> None:
    """Server defaults == pydantic defaults, and a pydantic dump is stored unchanged."""
    example = load_example(path)
    name = example["metadata"]["name"][:40] + f"-{uuid.uuid4().hex[:4]}"
    raw = {**example, "metadata": {"name": name}}
    stored = create(cluster, api_ns, raw)
    by_pydantic = api.ModelDeployment.from_body(raw).to_body()
    assert stored["spec"] == by_pydantic["spec"], "API server and pydantic default differently"

    dumped = {**by_pydantic, "metadata": {"name": f"{name}-dump"}}
    stored2 = create(cluster, api_ns, dumped)
    assert stored2["spec"] == dumped["spec"], "a pydantic dump is changed by the API server"

    reparsed = api.ModelDeployment.from_body(get_json(cluster, api_ns, name))
    assert reparsed.to_body()["spec"] == stored["spec"]
    assert reparsed.namespace == api_ns and reparsed.generation == 1


def _status(selector: str) -> api.ModelDeploymentStatus:
    now = "2026-01-02T03:04:05Z"
    return api.ModelDeploymentStatus(
        observedGeneration=1,
        conditions=[
            api.Condition(
                type=t, status=s, lastTransitionTime=now, reason=r, message="m", observedGeneration=1
            )
            for t, s, r in [
                ("Ready", "True", "AllVersionsReady"),
                ("ModelsReady", "True", "AllVersionsReady"),
                ("Progressing", "False", "RolloutComplete"),
                ("Degraded", "False", "AsExpected"),
            ]
        ],
        replicas=2,
        readyReplicas=2,
        updatedReplicas=2,
        selector=selector,
        endpoints=api.Endpoints(http="http://pc.ns.svc:8000", grpc="pc.ns.svc:8001"),
        models=[
            api.ModelStatus(
                name="add_sub",
                versions=[
                    api.VersionStatus(version=1, state="Unloaded", reason="NotWanted"),
                    api.VersionStatus(version=2, state="Ready", reason="Loaded", readyReplicas=2),
                ],
            )
        ],
        versionsReady="1/1",
        servedVersions="add_sub:2",
        replicasSummary="2/2",
        gpus="1",
    )


def test_status_printer_columns_and_scale(cluster: Any, api_ns: str) -> None:
    example = load_example(REPO / "examples" / "cpu-minimal.yaml")
    name = "pc"
    example["metadata"] = {"name": name}
    example["spec"]["models"][0]["versions"] = [{"version": 1}, {"version": 2}]
    example["spec"]["resources"]["gpu"] = 1
    create(cluster, api_ns, example)

    status = _status(selector="app.kubernetes.io/instance=pc")
    patch = json.dumps({"status": api.dump(status)})
    cluster.kubectl("patch", "md", name, "-n", api_ns, "--subresource=status", "--type=merge", "-p", patch)
    stored = get_json(cluster, api_ns, name)
    assert stored["status"] == api.dump(status), "the status shape is not what the CRD stores"
    parsed = api.ModelDeployment.from_body(stored)
    assert parsed.status == status

    table = cluster.kubectl("get", "md", name, "-n", api_ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "VERSIONS", "REPLICAS", "GPUS", "AGE"]
    assert table[1].split()[:5] == [name, "True", "1/1", "2/2", "1"]
    wide = cluster.kubectl("get", "mdep", name, "-n", api_ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-4:] == ["SERVING", "MIG", "STRATEGY", "URL"]
    # an empty MIG column prints as blanks, so check the tail of the row
    assert wide[1].split()[-3:] == ["add_sub:2", "inPlace", "http://pc.ns.svc:8000"]
    by_category = cluster.kubectl("get", "modeldeploy", "-n", api_ns, "-o", "name").stdout
    assert f"modeldeployment.modeldeploy.io/{name}" in by_category.split()

    cluster.kubectl("scale", f"md/{name}", "-n", api_ns, "--replicas=3")
    assert get_json(cluster, api_ns, name)["spec"]["replicas"] == 3
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw", f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{api_ns}/{api.PLURAL}/{name}/scale"
        ).stdout
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 2, "selector": "app.kubernetes.io/instance=pc"}

    # the status subresource ignores spec changes and the main resource ignores status changes
    cluster.kubectl(
        "patch", "md", name, "-n", api_ns, "--type=merge", "-p", json.dumps({"status": {"replicas": 9}})
    )
    assert get_json(cluster, api_ns, name)["status"]["replicas"] == 2

    bad = json.dumps(
        {"status": {"models": [{"name": "add_sub", "versions": [{"version": 1, "state": "Serving"}]}]}}
    )
    out = cluster.kubectl(
        "patch", "md", name, "-n", api_ns, "--subresource=status", "--type=merge", "-p", bad, check=False
    )
    assert out.returncode != 0 and "status.models[0].versions[0].state" in out.stderr


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("modeldeployment.spec.models.versionPolicy", "Triton version_policy"),
        ("md.spec.autoscaling.minReplicas", "scale to zero"),
        ("mdep.spec.resources.mig", "nvidia.com/mig-<profile>"),
        ("modeldeployments.status.models.versions.state", "Pending, Loading, Ready, Failed or Unloaded"),
        ("md.spec.rollout.strategy", "inPlace"),
    ],
)
def test_kubectl_explain(cluster: Any, crd_installed: str, field: str, expected: str) -> None:
    deadline = time.monotonic() + 60  # the OpenAPI document is published a little after Established
    while True:
        out = cluster.kubectl("explain", field, check=False)
        if out.returncode == 0 and expected in " ".join(out.stdout.split()):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"kubectl explain {field} does not show {expected!r}:\n{out.stdout}{out.stderr}")
        time.sleep(1)


# ------------------------------------------------------------------- plain-number quantities
def _with_cpu(q: Any) -> dict[str, Any]:
    doc = load_example(REPO / "tests" / "api" / "valid" / "08-requests-equal-limits.yaml")
    doc["metadata"] = {"name": f"q-{uuid.uuid4().hex[:6]}"}
    doc["spec"]["resources"] = {"requests": {"cpu": q}}
    return doc


@pytest.mark.parametrize(
    ("q", "admitted", "message"),
    [
        (0.5, True, ""),
        (1073741824, True, ""),
        ("500m", True, ""),
        (-1, False, "should be greater than or equal to 0"),
        ("-1", False, "should match"),
        ("abc", False, "should match"),
        (True, False, "must not validate the schema"),
        ({"a": 1}, False, "must have at most 0 items"),
        ([1], False, "must have at most 0 items"),
    ],
    ids=repr,
)
def test_plain_number_quantities_at_apply_time(
    cluster: Any, api_ns: str, q: Any, admitted: bool, message: str
) -> None:
    """As in Pod specs: fractions, integers and quantity strings are admitted by ``kubectl apply``;
    negative numbers, negative or malformed strings and other JSON types are refused naming the
    field; the operator's parser gives the same verdict."""
    out = kubectl_apply(cluster, api_ns, _with_cpu(q), "--dry-run=server")
    assert (out.returncode == 0) == admitted, out.stderr
    if not admitted:
        assert "spec.resources.requests.cpu" in out.stderr and message in out.stderr, out.stderr
    try:
        api.ModelDeployment.from_body(_with_cpu(q))
        parsed = True
    except api.SpecError:
        parsed = False
    assert parsed == admitted


def test_fractional_cpu_renders_a_deployment_the_api_server_admits(cluster: Any, api_ns: str) -> None:
    """``cpu: 0.5`` (and ``memory: 1073741824``) are stored as numbers in the ModelDeployment; the
    rendered Deployment carries them as quantity strings, which the API server admits (for real, not
    a dry run) and canonicalises (0.5 to 500m)."""
    from modeldeploy.render import render_children

    doc = _with_cpu(0.5)
    doc["spec"]["resources"] = {"requests": {"cpu": 0.5, "memory": 1073741824}, "limits": {"cpu": 1}}
    stored = create(cluster, api_ns, doc)
    assert stored["spec"]["resources"]["requests"] == {"cpu": 0.5, "memory": 1073741824}
    md = api.ModelDeployment.from_body(stored)
    dep = render_children(md)["Deployment"]
    assert dep is not None
    triton = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "triton")
    assert triton["resources"]["requests"] == {"cpu": "0.5", "memory": "1073741824"}
    out = cluster.kubectl(
        "apply", "--server-side", "--field-manager=modeldeploy-tests", "-n", api_ns, "-o", "json", "-f", "-",
        input=json.dumps(dep), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    live = json.loads(out.stdout)
    live_triton = next(c for c in live["spec"]["template"]["spec"]["containers"] if c["name"] == "triton")
    assert live_triton["resources"]["requests"] == {"cpu": "500m", "memory": "1073741824"}
    assert live_triton["resources"]["limits"] == {"cpu": "1"}
    cluster.kubectl("delete", "deployment", dep["metadata"]["name"], "-n", api_ns, "--wait=false")


def test_cold_start_status_is_stored_as_computed(cluster: Any, api_ns: str) -> None:
    """The operator writes the status only when it differs from the stored one: the cold-start
    fields it computes (per-version fetch counts, status.cache from the agents, scaleFromZero) must
    come back from the API server unchanged, CRD defaults included, or every refresh would rewrite
    them."""
    from modeldeploy.reconcile.cache_status import cache_status
    from modeldeploy.reconcile.status import AgentReport, compute_status
    from modeldeploy_runtime.agentapi import AgentStatus

    digest = "c" * 64
    example = load_example(REPO / "examples" / "cold-start-cache.yaml")
    example["metadata"] = {"name": "coldst", "namespace": api_ns}
    example["spec"]["models"][0]["versions"] = [{"version": 3, "sha256": digest}]
    created = create(cluster, api_ns, example)
    md = api.ModelDeployment.from_body(created)
    agent = AgentStatus.model_validate({
        "generation": 1, "appliedGeneration": 1,
        "models": [{"name": "llm", "served": [3], "versions": [
            {"version": 3, "state": "Ready", "fetch": {"origin": "cache", "bytes": 0, "seconds": 0.2}}]}],
        "cache": {"root": "/var/cache/modeldeploy", "entries": [{"digest": digest, "bytes": 42,
                  "lastVerified": "2026-01-01T00:00:00Z"}],
                  "events": [{"time": "2026-01-01T00:00:01Z", "digest": digest, "event": "CorruptEntry",
                              "message": "flipped"}]},
    })  # fmt: skip
    dep = {"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}  # fmt: skip
    status = compute_status(md, dep, [], None, agents=AgentReport(pods={"p": agent}), manifest_generation=1)
    done = {"status": {"completionTime": "2026-01-01T00:00:02Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip
    status["cache"] = cache_status(md, done, [], {"p": agent})
    assert status["scaleFromZero"]["route"] == "Unavailable"
    assert status["models"][0]["versions"][0]["fetch"]["fromCache"] == 1
    assert status["cache"]["corruptEntries"][0]["pod"] == "p"
    cluster.kubectl("patch", "md", "coldst", "-n", api_ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))  # fmt: skip
    assert get_json(cluster, api_ns, "coldst")["status"] == status


@pytest.mark.parametrize(
    ("example", "path"),
    [
        ("examples/cold-start-cache.yaml", ("cache", "maxSize")),
        ("tests/api/valid/05-llm-kv-cache-usage-at-one.yaml", ("autoscaling", "metric", "target")),
        ("tests/api/valid/05-hpa-cpu.yaml", ("autoscaling", "metric", "target")),
        ("tests/api/valid/08-requests-equal-limits.yaml", ("resources", "requests", "cpu")),
    ],
)
@pytest.mark.parametrize("value", ["1e99999999", "1e999999Ki", "+9e-99999999"])
def test_huge_exponent_quantities_are_refused_quickly(
    cluster: Any, api_ns: str, example: str, path: tuple[str, ...], value: str
) -> None:
    """Quantities that CEL rules compare are scaled to one exponent first: ``1e99999999`` used to
    keep the API server busy for minutes (and gigabytes) per request, even though the field's
    pattern already refused it, because the API server evaluates CEL rules on such a value too.
    Every such rule now checks the form first: refused at once, by the pattern, naming the field."""
    doc = load_example(REPO / example)
    doc["metadata"] = {"name": f"exp-{uuid.uuid4().hex[:6]}"}
    node = doc["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    t0 = time.monotonic()
    out = cluster.kubectl(
        "create", "--dry-run=server", "--request-timeout=30s", "-n", api_ns, "-f", "-",
        input=json.dumps(doc), check=False,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert out.returncode != 0, "a huge exponent was admitted"
    assert "spec." + ".".join(path) in out.stderr and "should match" in out.stderr, out.stderr
    assert took < 10, f"the API server took {took:.1f}s to refuse {value!r}"
    with pytest.raises(api.SpecError):
        api.ModelDeployment.from_body(doc)
