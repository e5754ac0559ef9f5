"""Issue #15 end to end: operator + control plane + real agent + real tritonserver + real S3 (moto).

Like test_query_agents.py, the operator's pod lands on a KWOK node whose pod CIDR is a loopback
range; this test plays the kubelet for it: it copies the mounted ConfigMaps/Secrets (manifest,
operator's push key, storage credentials, trusted key) into files, plays the init agent's first step
(the pod's own control key in a file of the in-memory emptyDir) and runs Triton's rendered launch
line (``control.triton_launch``) against a stand-in ``tritonserver`` to get the flags it starts with.
Then:
  * no Secret is owned by the ModelDeployment; nothing the operator rendered holds the control key;
    Triton started with the launched flags refuses a plain client's unload;
  * a signed v1 from S3 is Ready; a v2 modified after signing is Failed/SignatureInvalid in the
    ModelDeployment's status while v1 keeps serving;
  * afterwards no secret value (S3 secret key, control key, signing key) appears in the status,
    the events, the operator's and the agent's logs, the Triton log or the rendered objects.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opsupport import OperatorProcess, wait_for
from test_query_agents import (
    TAINT,
    _cond,
    _package,
    _states,
    agent_operator,
    loopback_node,
    qa_ns,
)

from modeldeploy_runtime.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.triton, pytest.mark.slow]
__all__ = ["agent_operator", "loopback_node", "qa_ns"]  # fixtures used here


@pytest.fixture
def moto() -> Iterator[tuple[str, str, str]]:
    """(endpoint, key id, secret key) of a real S3 server (moto) on loopback."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", "AKIDTRUSTTEST0001", "trust-test-secret-" + "9f3c" * 8
    finally:
        server.stop()


def _md(ns: str, node: str, endpoint: str, versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "scale", "namespace": ns},
        "spec": {
            "models": [
                {
                    "name": "scale",
                    "format": "python",
                    "source": "s3://trusted/scale",
                    "credentials": {"secretName": "store", "endpoint": endpoint},
                    "verification": {"publicKey": {"configMapName": "model-keys", "key": "model.pub"}},
                    "versions": versions,
                    "versionPolicy": {"latest": 1},
                    "maxBatchSize": 8,
                }
            ],
            "replicas": 1,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "rollout": {"strategy": "inPlace"},
            "networkPolicy": {"monitoringNamespace": "monitoring"},
            "scheduling": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{"operator": "Equal", **TAINT}],
            },
        },
    }


class Kubelet:
    """What the kubelet would do for the one pod: mounted volumes as files, env values."""

    def __init__(self, cluster: Any, ns: str, root: Path) -> None:
        self.cluster, self.ns, self.root = cluster, ns, root

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.cluster.kubectl("get", kind, name, "-n", self.ns, "-o", "json").stdout))

    def _local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def mount(self, pod: dict[str, Any], container: str) -> None:
        """Write the ConfigMap/Secret volumes of ``container`` under root (paths kept)."""
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        for m in c["volumeMounts"]:
            v = vols[m["name"]]
            if "configMap" in v:
                data = {
                    k: s.encode()
                    for k, s in (self.get("cm", v["configMap"]["name"]).get("data") or {}).items()
                }
            elif "secret" in v:
                raw = self.get("secret", v["secret"]["secretName"]).get("data") or {}
                data = {k: base64.b64decode(s) for k, s in raw.items()}
            else:
                continue
            items = (v.get("configMap") or v.get("secret") or {}).get("items")
            names = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
            for key, rel in names.items():
                dest = self._local(m["mountPath"]) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data[key])

    def manifest(self) -> Path:
        """The manifest with its in-pod paths pointing at the mounted copies."""
        src = self._local("/etc/modeldeploy")
        text = next(src.rglob("manifest.json")).read_text()
        text = text.replace('"/var/run/', f'"{self.root}/var/run/').replace('"/etc/', f'"{self.root}/etc/')
        out = self.root / "manifest.json"
        out.write_text(text)
        return out

    def env(self, pod: dict[str, Any], container: str) -> dict[str, str]:
        c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        assert all("valueFrom" not in e for e in c.get("env") or []), c["env"]  # nothing by reference
        return {e["name"]: e["value"] for e in c.get("env") or []}

    def launch(self, pod: dict[str, Any], container: str, fake_bin: Path) -> list[str]:
        """Run the container's command + args as its shell would, with its paths under root and a
        stand-in for the executable the line execs (it prints its arguments): those arguments."""
        c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        argv = [a.replace("/run/", f"{self.root}/run/") for a in c["command"]] + list(c["args"])
        env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=30)
        return list(json.loads(out.stdout))


def test_signed_models_control_key_and_no_secret_leaks(
    cluster: Any,
    agent_operator: OperatorProcess,
    operator_push_key: tuple[Any, Path],
    loopback_node: str,
    qa_ns: str,
    tmp_path: Path,
    moto: tuple[str, str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import boto3
    import requests
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    from modeldeploy.api.v1alpha1 import ModelDeployment
    from modeldeploy.render.deployment import triton_args
    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.control import (
        CONTROL_KEY_ENV,
        CONTROL_KEY_FILE,
        ensure_control_key,
        restricted_api_args,
        triton_launch,
    )
    from modeldeploy_runtime.digest import write_sha_manifest
    from modeldeploy_runtime.pushsign import OWNER_ENV, PUSH_KEY_FILE, owner_id
    from modeldeploy_runtime.signing import key_identity, sign_folder
    from modeldeploy_runtime.triton import TritonServer

    caplog.set_level(logging.DEBUG)
    endpoint, key_id, secret_key = moto
    # signed v1, v2 modified after signing, in S3
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    pub_pem = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "signing.key").write_bytes(key_pem)
    store = tmp_path / "store"
    _package(store, 1, 1.0)
    _package(store, 2, 2.0)
    for v in (1, 2):
        sign_folder(store / "scale" / str(v), tmp_path / "signing.key")
    (store / "scale" / "2" / "factor.txt").write_text("20.0")  # after signing; and, as whoever
    write_sha_manifest(store / "scale" / "2")  # can write the bucket could, a matching manifest.sha256
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                      aws_secret_access_key=secret_key, region_name="us-east-1")  # fmt: skip
    s3.create_bucket(Bucket="trusted")
    for p in sorted((store / "scale").rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), "trusted", f"scale/{p.relative_to(store / 'scale').as_posix()}")

    kc = cluster.kubectl
    kc("create", "secret", "generic", "store", "-n", qa_ns,
       f"--from-literal=AWS_ACCESS_KEY_ID={key_id}", f"--from-literal=AWS_SECRET_ACCESS_KEY={secret_key}")  # fmt: skip
    kc(
        "create",
        "configmap",
        "model-keys",
        "-n",
        qa_ns,
        f"--from-file=model.pub={_write(tmp_path / 'pub', pub_pem)}",
    )
    kc("apply", "-f", "-", input=json.dumps(_md(qa_ns, loopback_node, endpoint, [{"version": 1}])))

    def running_pod() -> dict[str, Any] | None:
        items = json.loads(kc("get", "pods", "-n", qa_ns, "-o", "json").stdout)["items"]
        ok = [
            p for p in items if (p.get("status") or {}).get("podIP") and p["status"].get("phase") == "Running"
        ]
        return ok[0] if ok else None

    pod = wait_for(running_pod, 90, "the pod Running with an IP")
    ip = pod["status"]["podIP"]
    kubelet = Kubelet(cluster, qa_ns, tmp_path / "pod")
    md_obj = kubelet.get("md", "scale")
    # no Secret of the operator's: none owned by the ModelDeployment, none referenced by the pod
    owned = [
        x["metadata"]["name"]
        for x in json.loads(kc("get", "secrets", "-n", qa_ns, "-o", "json").stdout)["items"]
        if any(r.get("uid") == md_obj["metadata"]["uid"] for r in x["metadata"].get("ownerReferences") or [])
    ]
    assert not owned, owned
    assert "secretKeyRef" not in json.dumps(pod["spec"])
    kubelet.mount(pod, "agent")
    env = kubelet.env(pod, "agent")
    assert CONTROL_KEY_ENV not in env and CONTROL_KEY_ENV not in kubelet.env(pod, "triton")
    owner = env[OWNER_ENV]
    assert owner == owner_id(qa_ns, "scale", md_obj["metadata"]["uid"])
    push_key = kubelet._local("/etc/modeldeploy") / PUSH_KEY_FILE
    assert push_key.read_text() == operator_push_key[0].public_pem
    # Triton's container is exactly the launch line over the rendered args (no key in them) ...
    triton_c = next(c for c in pod["spec"]["containers"] if c["name"] == "triton")
    assert (triton_c["command"], triton_c["args"]) == triton_launch(triton_c["args"])
    assert triton_c["args"] == triton_args(ModelDeployment.from_body(md_obj))
    assert not any("restricted" in a for a in triton_c["args"])
    # ... the init agent's first step makes the pod's key in the in-memory emptyDir ...
    control_key = ensure_control_key(kubelet._local(CONTROL_KEY_FILE))
    # ... and the line starts tritonserver with the rendered args plus the flags holding that key
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "tritonserver").write_text(
        "#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n"
    )
    (fake_bin / "tritonserver").chmod(0o755)
    launched = kubelet.launch(pod, "triton", fake_bin)
    assert launched == [*triton_c["args"], *restricted_api_args(control_key)]

    manifest = kubelet.manifest()
    repo = tmp_path / "models"
    srv = TritonServer(repo, model_control_mode="explicit", extra_args=restricted_api_args(control_key),
                       log_path=tmp_path / "triton.log")  # fmt: skip
    init = Agent(manifest, repo, "http://127.0.0.1:9")
    assert init.run_init() == 0
    srv.start()
    # No push owner: this agent takes the manifest from the file only, the one place this kubelet
    # rewrites the in-pod paths (credentials, trusted key) to their copies here; a pushed manifest
    # names the in-pod paths. Signed pushes to real agents: test_query_agents.py.
    agent = Agent(manifest, repo, srv.http_url, poll_interval=0.3, control_key=control_key)
    stop = threading.Event()
    port = next(
        p["containerPort"]
        for c in pod["spec"]["containers"]
        for p in c.get("ports") or []
        if p["name"] == "agent"
    )
    server, _ = agent.serve_in_thread(ip, port)
    loop = threading.Thread(target=agent.run_sidecar, args=(stop,), daemon=True)
    loop.start()
    try:
        r = requests.post(f"{srv.http_url}/v2/repository/models/scale/unload", json={}, timeout=30)
        assert r.status_code == 403  # a plain client

        def status_when(pred: Any) -> dict[str, Any] | None:
            out = kc("get", "md", "scale", "-n", qa_ns, "-o", "json").stdout
            st = dict(json.loads(out).get("status") or {})
            return st if pred(st) else None

        wait_for(lambda: status_when(lambda s: s.get("servedVersions") == "scale:1" and
                                     _cond(s, "Ready").get("status") == "True"), 120, "v1 Ready")  # fmt: skip
        v1 = agent.status().model_dump(mode="json")["models"][0]["versions"][0]
        assert v1["signer"] == key_identity(pub_pem), v1
        # kubectl get md -o yaml: what exactly runs, and who signed it
        st = wait_for(
            lambda: status_when(lambda s: "signer" in s["models"][0]["versions"][0]), 60, "provenance"
        )
        assert st["models"][0]["versions"][0]["signer"] == key_identity(pub_pem)
        assert st["models"][0]["versions"][0]["digest"] == v1["digest"] and v1["digest"].startswith("sha256:")

        kc(
            "apply",
            "-f",
            "-",
            input=json.dumps(_md(qa_ns, loopback_node, endpoint, [{"version": 1}, {"version": 2}])),
        )

        def resync() -> bool:
            kubelet.mount(pod, "agent")
            return json.loads(kubelet.manifest().read_text())["generation"] >= 2

        wait_for(lambda: resync() or None, 60, "the manifest with v2")
        st = wait_for(
            lambda: status_when(lambda s: _states(s).get(2, ("",))[0] == "Failed"), 120, "v2 Failed"
        )
        assert _states(st)[2] == ("Failed", "SignatureInvalid"), _states(st)
        assert "factor.txt: modified after signing" in json.dumps(st)
        assert _states(st)[1] == ("Ready", "StillServing") and st["servedVersions"] == "scale:1"
        body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [[1, 1, 1, 1]]}]}
        r = requests.post(f"{srv.http_url}/v2/models/scale/infer", json=body, timeout=30)
        assert r.json()["outputs"][0]["data"] == [1.0] * 4  # v1 still serves
    finally:
        stop.set()
        server.shutdown()
        loop.join(30)
        srv.stop()

    # ---- the secrets scan
    secrets = {
        "S3 secret key": secret_key,
        "control key": control_key,
        "signing key": key_pem.decode().splitlines()[1],
        "push signing key": operator_push_key[0].private_pem().decode().splitlines()[1],
    }
    places = {
        "status": kc("get", "md", "scale", "-n", qa_ns, "-o", "json").stdout,
        "events": kc("get", "events", "-n", qa_ns, "-o", "json").stdout,
        "pods, deployments, configmaps, networkpolicies": kc(
            "get", "pods,deployments,configmaps,networkpolicies", "-n", qa_ns, "-o", "json"
        ).stdout,
        "operator log": "".join(p.read_text(errors="replace") for p in agent_operator.log_dir.glob("*.log")),
        "agent log": caplog.text,
        "triton log": (tmp_path / "triton.log").read_text(errors="replace"),
        "agent /status": agent.status().model_dump_json(),
    }
    assert "SignatureInvalid" in places["status"]
    assert "push-key.pub" in places["pods, deployments, configmaps, networkpolicies"]
    # the control key is in no Secret either (the pod made it; nothing outside the pod has it)
    assert control_key not in kc("get", "secrets", "-n", qa_ns, "-o", "json").stdout
    leaks = [(what, where) for what, s in secrets.items() for where, text in places.items() if s in text]
    assert not leaks, leaks


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
