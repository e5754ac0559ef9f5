"""Real runtime agents and tritonservers standing in for the containers of KWOK pods.

KWOK pods run nothing. On a KWOK node whose pod CIDR is a loopback range (``NodePool(pod_cidr=
"127.77.N.0/24")``), a pod's IP is an address of this machine, so a real agent can listen on
``<podIP>:<agent port>`` exactly where the operator (and a kubelet's httpGet probe) will look for it.
:class:`PodAgents` does per pod what the pod's containers would do: the init agent fills a model
repository from the manifest the operator rendered (read from the ConfigMap, as the kubelet mounts
it), a tritonserver serves it, and the sidecar agent keeps Triton in line with the manifest. The
sidecar takes the operator's signed pushes as in a pod: the operator's public key is the ConfigMap's
``push-key.pub``, written beside the manifest file (the volume's projection), and its owner is the
agent container's ``MODELDEPLOY_OWNER`` env in the pod spec.

The manifest file is written once, at start: it then stands for a kubelet that has not synced the
ConfigMap volume yet, so only a push can bring a newer manifest (``sync_manifests()`` plays the
kubelet's sync when a caller wants it: manifest and public key). Used by the integration tests and bench/push_bench.py.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy.cluster.local import LocalCluster

#: A tiny python-backend model: Y = X * the factor in the version folder's factor.txt (so a reply
#: says which version answered).
SCALE_MODEL = """
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(folder, "factor.txt")) as f:
            self.factor = np.float32(f.read())

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * self.factor).astype(np.float32))]))
        return out
"""


def package_scale(store: Path, version: int, factor: float, name: str = "scale") -> None:
    """Package :data:`SCALE_MODEL` as ``<store>/<name>/<version>`` (input X, output Y: FP32 [4])."""
    from modeldeploy_runtime.config import TensorSpec
    from modeldeploy_runtime.package import package_python

    src = store / f"build-{name}-{version}"
    src.mkdir(parents=True)
    (src / "model.py").write_text(SCALE_MODEL)
    (src / "factor.txt").write_text(str(factor))
    package_python(
        src / "model.py", store, name, version=version, artifacts=[src / "factor.txt"],
        inputs=[TensorSpec("X", "TYPE_FP32", [4])], outputs=[TensorSpec("Y", "TYPE_FP32", [4])],
    )  # fmt: skip


def scale_deployment(
    namespace: str,
    node: str,
    store: Path,
    versions: list[dict[str, Any]],
    replicas: int,
    taint: dict[str, str],
) -> dict[str, Any]:
    """A ModelDeployment of the packaged ``scale`` model (``versionPolicy latest: 1``, in place),
    pinned to one (tainted) KWOK node."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "scale", "namespace": namespace},
        "spec": {
            "models": [
                {
                    "name": "scale",
                    "format": "python",
                    "source": f"file://{store}/scale",
                    "versions": versions,
                    "versionPolicy": {"latest": 1},
                    "maxBatchSize": 8,
                }
            ],
            "replicas": replicas,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "rollout": {"strategy": "inPlace"},
            "scheduling": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{"operator": "Equal", **taint}],
            },
        },
    }


@dataclass
class PodAgent:
    pod: str
    ip: str
    port: int
    workdir: Path
    agent: Any = None  # modeldeploy_runtime.agent.Agent
    triton: Any = None  # modeldeploy_runtime.triton.TritonServer
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    http: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    @property
    def manifest_path(self) -> Path:
        return self.workdir / "manifest.json"

    @property
    def push_key_path(self) -> Path:
        """Where the agent reads the operator's public key (beside the manifest, as mounted)."""
        from modeldeploy_runtime.pushsign import PUSH_KEY_FILE

        return self.workdir / PUSH_KEY_FILE


def pod_owner(pod: dict[str, Any]) -> str:
    """The agent container's ``MODELDEPLOY_OWNER`` (whose pushes it takes)."""
    from modeldeploy_runtime.pushsign import OWNER_ENV

    c = next(c for c in pod["spec"]["containers"] if c["name"] == "agent")
    return str(next(e["value"] for e in c.get("env") or [] if e["name"] == OWNER_ENV))


def agent_port(pod: dict[str, Any]) -> int:
    return next(
        int(cp["containerPort"])
        for c in pod["spec"]["containers"]
        for cp in c.get("ports") or []
        if cp.get("name") == "agent"
    )


def probe_passes(pod: dict[str, Any], container: str = "agent") -> tuple[bool, str]:
    """Perform the container's rendered readiness probe the way the kubelet does (httpGet: GET
    ``scheme://host:port/path`` with the probe's timeout, success on 200-399, redirects not
    followed); the probe must be an httpGet probe. Returns (passed, what happened)."""
    import requests

    c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    probe = c["readinessProbe"]
    get = probe["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(cp["containerPort"] for cp in c.get("ports") or [] if cp.get("name") == port)
    host = get.get("host") or pod["status"]["podIP"]
    url = f"{get.get('scheme', 'HTTP').lower()}://{host}:{port}{get['path']}"
    try:
        r = requests.get(url, timeout=probe.get("timeoutSeconds", 1), allow_redirects=False)
    except requests.RequestException as exc:
        return False, f"{url}: {exc.__class__.__name__}: {exc}"
    return 200 <= r.status_code < 400, f"{url}: HTTP {r.status_code} {r.text.strip()[:300]}"


class PodAgents:
    """Agents + tritonservers for the running pods of one ModelDeployment (see the module doc)."""

    def __init__(self, cluster: LocalCluster, namespace: str, name: str, workdir: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.workdir = workdir
        self.pods: list[PodAgent] = []

    def _get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        return dict(json.loads(out))

    def configmap_data(self) -> dict[str, str]:
        return dict(self._get("configmap", f"{self.name}-models")["data"])

    def manifest_text(self) -> str:
        return str(self.configmap_data()["manifest.json"])

    def sync_manifests(self) -> None:
        """What the kubelet does when it syncs the ConfigMap volume."""
        from modeldeploy_runtime.pushsign import PUSH_KEY_FILE

        data = self.configmap_data()
        for p in self.pods:
            _write_atomically(p.manifest_path, data["manifest.json"])
            _write_atomically(p.push_key_path, data.get(PUSH_KEY_FILE, ""))

    def start(self, pods: list[dict[str, Any]], poll_interval: float = 0.3) -> list[PodAgent]:
        from modeldeploy_runtime.pushsign import PUSH_KEY_FILE
        from modeldeploy_runtime.triton import prepare_backends

        data = self.configmap_data()
        prepare_backends()  # once, before the servers start in parallel
        new = [
            (
                PodAgent(
                    p["metadata"]["name"],
                    p["status"]["podIP"],
                    agent_port(p),
                    self.workdir / p["metadata"]["name"],
                ),
                pod_owner(p),
            )
            for p in pods
        ]
        text, key = data["manifest.json"], data.get(PUSH_KEY_FILE, "")
        with ThreadPoolExecutor(max_workers=max(1, len(new))) as pool:
            list(pool.map(lambda n: self._start_one(n[0], text, key, n[1], poll_interval), new))
        self.pods.extend(pa for pa, _ in new)
        return [pa for pa, _ in new]

    def _start_one(
        self, pa: PodAgent, manifest: str, push_key: str, owner: str, poll_interval: float
    ) -> None:
        from modeldeploy_runtime.agent import Agent
        from modeldeploy_runtime.triton import TritonServer

        pa.workdir.mkdir(parents=True, exist_ok=True)
        pa.manifest_path.write_text(manifest)
        pa.push_key_path.write_text(push_key)
        repo = pa.workdir / "models"
        init = Agent(pa.manifest_path, repo, "http://127.0.0.1:9")
        if init.run_init() != 0:
            raise RuntimeError(f"pod {pa.pod}: init agent failed: {init.last_error}")
        pa.triton = TritonServer(
            repo, model_control_mode="explicit", log_path=pa.workdir / "triton.log"
        ).start()
        pa.agent = Agent(
            pa.manifest_path, repo, pa.triton.http_url, poll_interval=poll_interval, push_owner=owner
        )
        pa.http, th = pa.agent.serve_in_thread(pa.ip, pa.port)
        loop = threading.Thread(target=pa.agent.run_sidecar, args=(pa.stop,), daemon=True)
        loop.start()
        pa.threads = [th, loop]

    def stop(self) -> None:
        for p in self.pods:
            p.stop.set()
            if p.http is not None:
                p.http.shutdown()
        for p in self.pods:
            for t in p.threads:
                t.join(30)
            if p.triton is not None:
                p.triton.stop()
        self.pods = []

    def __enter__(self) -> PodAgents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
