#!/usr/bin/env python3
"""The modeldeploy demo: `make demo`.

1. starts the local control plane (real etcd / kube-apiserver / controller-manager / scheduler,
   KWOK GPU and CPU nodes);
2. installs the operator with the Helm chart (CRD, RBAC, ServiceAccount, Deployment) and runs the
   operator process locally, authenticated as the chart's ServiceAccount (its image cannot run on
   KWOK's simulated nodes);
3. packages a small torch model (two versions) into a model store with `mdctl package`'s API;
4. applies a ModelDeployment for it and waits until it is Ready (pods pass PodSecurity `restricted`);
5. runs the real Triton server plus the runtime agent (init, then sidecar) on exactly the model
   manifest the operator rendered into the cluster, waits until the agent reports every expected
   version READY, and checks Triton's answers against torch;
6. bumps the model to version 2 in the ModelDeployment (as a GitOps commit would): the operator
   updates the manifest in place (no new pods), the agent loads v2 into the running Triton and
   unloads v1, and the answers now match v2;
7. large language model: packages a tiny random-weight GPT-2 built locally (no download) as a
   `transformers` model, deploys it (the operator renders the OpenAI endpoint next to Triton), runs
   the agent, Triton and `modeldeploy-runtime openai` on the rendered manifest, and streams a chat
   completion with the official `openai` client.

Run `python hack/demo.py --keep` to leave the cluster and files behind for a look with kubectl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "modeldeploy"
NS_SYSTEM = "modeldeploy-system"
NS_MODELS = "models"
RELEASE = "modeldeploy"
MD_NAME = "iris-mlp"
MODEL = "iris_mlp"
LLM_NAME = "tiny-lm"


def step(msg: str) -> None:
    print(f"\n\033[1m==> {msg}\033[0m", flush=True)


def info(msg: str) -> None:
    print(f"    {msg}", flush=True)


def http_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (OSError, ValueError):
        return 0, None


def ready_versions(agent_port: int) -> list[int] | None:
    """The versions the agent reports Ready; None while its /status does not answer (a busy machine)."""
    code, body = http_json(f"http://127.0.0.1:{agent_port}/status")
    if code != 200 or not body:
        return None
    return [v["version"] for m in body["models"] for v in m["versions"] if v["state"] == "Ready"]


def build_model(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()


def model_deployment(store: Path, version: int) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MD_NAME, "namespace": NS_MODELS},
        "spec": {
            "models": [
                {
                    "name": MODEL,
                    "format": "pytorch",
                    "source": f"file://{store}/{MODEL}",
                    "versions": [{"version": v} for v in range(1, version + 1)],
                    "versionPolicy": {"latest": 1},
                    "maxBatchSize": 8,
                    "dynamicBatching": {"maxQueueDelayMicroseconds": 100},
                }
            ],
            "replicas": 2,
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
            "rollout": {"strategy": "inPlace"},
        },
    }


def llm_deployment(store: Path) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": LLM_NAME, "namespace": NS_MODELS},
        "spec": {
            "models": [
                {
                    "name": LLM_NAME,
                    "format": "transformers",
                    "source": f"file://{store}/{LLM_NAME}",
                    "versions": [{"version": 1}],
                    "instanceGroups": [{"count": 1, "kind": "CPU"}],
                }
            ],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        },
    }


def llm_step(cluster: Any, work: Path, procs: list[subprocess.Popen[bytes]], servers: list[Any]) -> None:
    """Step 7: package, deploy and stream from a tiny language model through the OpenAI endpoint."""
    from openai import OpenAI

    from modeldeploy.cluster.local import wait_for
    from modeldeploy_runtime.package import package_transformers
    from modeldeploy_runtime.ports import free_port
    from modeldeploy_runtime.tiny_lm import build_tiny_lm
    from modeldeploy_runtime.triton import TritonServer

    step("Large language model: package a tiny random-weight GPT-2 (built locally) as format transformers")
    store = work / "llm-store"
    res = package_transformers(build_tiny_lm(work / "tiny-lm-hf"), store, LLM_NAME)
    info(res.summary())

    step(f"kubectl apply ModelDeployment {NS_MODELS}/{LLM_NAME} (format transformers)")
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(llm_deployment(store)))
    t0 = time.monotonic()
    cluster.kubectl("wait", "--for=condition=Ready", f"md/{LLM_NAME}", "-n", NS_MODELS, "--timeout=120s")
    md = json.loads(cluster.kubectl("get", "md", LLM_NAME, "-n", NS_MODELS, "-o", "json").stdout)
    info(
        f"Ready after {time.monotonic() - t0:.1f}s; status.endpoints.openai = {md['status']['endpoints']['openai']}"
    )
    pod = json.loads(cluster.kubectl("get", "deploy", LLM_NAME, "-n", NS_MODELS, "-o", "json").stdout)
    info("pod containers: " + ", ".join(c["name"] for c in pod["spec"]["template"]["spec"]["containers"]))

    step("Real Triton + agent + OpenAI endpoint on the rendered manifest; stream a chat completion")
    cm = json.loads(cluster.kubectl("get", "cm", f"{LLM_NAME}-models", "-n", NS_MODELS, "-o", "json").stdout)
    manifest = work / "llm-manifest.json"
    manifest.write_text(cm["data"]["manifest.json"])
    repo = work / "llm-models"
    repo.mkdir()
    rt = [sys.executable, "-m", "modeldeploy_runtime.cli"]
    subprocess.run([*rt, "agent", "--mode", "init", "--manifest", str(manifest), "--repository", str(repo),
                    "--log-format", "text"], check=True)  # fmt: skip
    triton = TritonServer(repo, model_control_mode="explicit", log_path=work / "llm-triton.log")
    servers.append(triton)
    triton.start()
    agent_port, api_port = free_port(), free_port()
    with (work / "llm-agent.log").open("wb") as fh:
        procs.append(subprocess.Popen(
            [*rt, "agent", "--mode", "sidecar", "--manifest", str(manifest), "--repository", str(repo),
             "--triton-url", triton.http_url, "--host", "127.0.0.1", "--port", str(agent_port),
             "--poll-interval", "0.5", "--log-format", "text"],
            stdout=fh, stderr=subprocess.STDOUT))  # fmt: skip
    with (work / "llm-openai.log").open("wb") as fh:
        procs.append(subprocess.Popen(
            [*rt, "openai", "--repository", str(repo), "--triton-grpc", triton.grpc_address,
             "--host", "127.0.0.1", "--port", str(api_port)],
            stdout=fh, stderr=subprocess.STDOUT))  # fmt: skip
    wait_for(lambda: http_json(f"http://127.0.0.1:{agent_port}/ready")[0] == 200, 180, "agent /ready")
    wait_for(
        lambda: http_json(f"http://127.0.0.1:{api_port}/v1/models")[0] == 200, 120, "the OpenAI endpoint"
    )
    client = OpenAI(base_url=f"http://127.0.0.1:{api_port}/v1", api_key="unused")
    info("models: " + ", ".join(m.id for m in client.models.list().data))
    chunks: list[str] = []
    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model=LLM_NAME,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks.append(chunk.choices[0].delta.content)
    info(f"streamed {len(chunks)} chunks in {time.monotonic() - t0:.2f}s: {''.join(chunks)!r}")
    full = client.chat.completions.create(
        model=LLM_NAME, messages=[{"role": "user", "content": "hello"}], max_tokens=24, temperature=0
    )
    assert full.choices[0].message.content == "".join(chunks), "streamed text differs from the full answer"
    info(
        f"chat completion streamed through Triton == non-streaming answer (usage {full.usage.total_tokens} tokens)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="leave the cluster, operator files and store behind")
    args = ap.parse_args()

    import numpy as np
    import torch
    import tritonclient.http as triton_http

    from modeldeploy.cluster.local import LocalCluster, wait_for
    from modeldeploy_runtime.package import BatchingOptions, package_torch
    from modeldeploy_runtime.ports import free_port, free_ports
    from modeldeploy_runtime.triton import TritonServer

    work = Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))
    procs: list[subprocess.Popen[bytes]] = []
    cluster = LocalCluster(name="demo")
    triton: TritonServer | None = None
    t_start = time.monotonic()
    try:
        step(
            "Local control plane (etcd, kube-apiserver with RBAC + PodSecurity, controller-manager, scheduler, KWOK)"
        )
        cluster.up()
        info(
            cluster.kubectl(
                "get", "nodes", "-L", "nvidia.com/gpu.product", "-L", "nvidia.com/gpu.count"
            ).stdout
        )

        step(
            f"helm install {RELEASE} charts/modeldeploy (CRD, least-privilege RBAC, ServiceAccount, operator)"
        )
        for ns in (NS_SYSTEM, NS_MODELS):
            cluster.kubectl("create", "namespace", ns, check=False)
            cluster.kubectl(
                "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
            )
        values = work / "values.yaml"
        values.write_text(yaml.safe_dump({"watchNamespaces": [NS_MODELS], "operator": {"logFormat": "text"}}))
        out = cluster.helm(
            "upgrade", "--install", RELEASE, str(CHART), "-n", NS_SYSTEM, "-f", str(values), "--wait"
        )
        info(out.stdout.strip().splitlines()[0] if out.stdout.strip() else "installed")
        sa = json.loads(cluster.kubectl("get", "serviceaccounts", "-n", NS_SYSTEM, "-o", "json").stdout)[
            "items"
        ]
        sa_name = next(s["metadata"]["name"] for s in sa if s["metadata"]["name"] != "default")
        token = cluster.kubectl("create", "token", sa_name, "-n", NS_SYSTEM, "--duration=2h").stdout.strip()
        kubeconfig = cluster.kubeconfig_for_token(token, work / "operator.kubeconfig")
        health_port, metrics_port = free_ports(2)
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1")
        op_log = work / "operator.log"
        cmd = [sys.executable, "-m", "modeldeploy.cli", "operator", "run", "--namespace", NS_MODELS,
               "--log-format", "text", "--metrics-port", str(metrics_port), "--health-port", str(health_port),
               "--bind-address", "127.0.0.1",
               # KWOK has no kubelet whose ConfigMap volume sync the operator must wait out; the
               # demo's agent reads the manifest straight from the cluster.
               "--manifest-sync-seconds", "5"]  # fmt: skip
        with op_log.open("wb") as fh:
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env))
        wait_for(
            lambda: http_json(f"http://127.0.0.1:{health_port}/healthz")[0] == 200, 60, "operator /healthz"
        )
        info(f"operator running as system:serviceaccount:{NS_SYSTEM}:{sa_name} (log: {op_log})")

        step("Package a torch model (2 versions) into a model store (TorchScript + python-backend wrapper)")
        store = work / "store"
        example = torch.randn(1, 4)
        for version, seed in ((1, 1), (2, 2)):
            res = package_torch(build_model(seed), store, MODEL, example_inputs=example, version=version,
                                batching=BatchingOptions(max_batch_size=8))  # fmt: skip
            info(res.summary())

        step(f"kubectl apply ModelDeployment {NS_MODELS}/{MD_NAME} (version 1)")
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(model_deployment(store, 1)))
        t0 = time.monotonic()
        cluster.kubectl("wait", "--for=condition=Ready", f"md/{MD_NAME}", "-n", NS_MODELS, "--timeout=120s")
        info(f"Ready after {time.monotonic() - t0:.1f}s")
        info(cluster.kubectl("get", "md", "-n", NS_MODELS, "-o", "wide").stdout)
        info(cluster.kubectl("get", "deploy,svc,cm,pdb,pods", "-n", NS_MODELS).stdout)

        step("Real Triton + runtime agent on the manifest the operator rendered")
        repo = work / "models"
        repo.mkdir()
        manifest = work / "manifest.json"

        def pull_manifest() -> str:
            cm = json.loads(
                cluster.kubectl("get", "cm", f"{MD_NAME}-models", "-n", NS_MODELS, "-o", "json").stdout
            )
            text: str = cm["data"]["manifest.json"]
            manifest.write_text(text)
            return text

        manifest_v1 = pull_manifest()
        rt = [sys.executable, "-m", "modeldeploy_runtime.cli"]
        subprocess.run([*rt, "agent", "--mode", "init", "--manifest", str(manifest), "--repository", str(repo),
                        "--log-format", "text"], check=True)  # fmt: skip
        info(f"init agent filled {repo}: {sorted(str(p.relative_to(repo)) for p in repo.rglob('*.pt'))}")
        triton = TritonServer(repo, model_control_mode="explicit").start()
        info(f"tritonserver ready: {triton.http_url}")
        agent_port = free_port()
        agent_log = work / "agent.log"
        with agent_log.open("wb") as fh:
            procs.append(subprocess.Popen(
                [*rt, "agent", "--mode", "sidecar", "--manifest", str(manifest), "--repository", str(repo),
                 "--triton-url", triton.http_url, "--host", "127.0.0.1", "--port", str(agent_port),
                 "--poll-interval", "0.5", "--log-format", "text"],
                stdout=fh, stderr=subprocess.STDOUT))  # fmt: skip
        wait_for(lambda: http_json(f"http://127.0.0.1:{agent_port}/ready")[0] == 200, 120, "agent /ready")
        status = wait_for(lambda: http_json(f"http://127.0.0.1:{agent_port}/status")[1], 60, "agent /status")
        info("agent /status: " + json.dumps(status["models"]))

        client = triton_http.InferenceServerClient(triton.http_address)
        batch = np.random.default_rng(0).standard_normal((5, 4), dtype=np.float32)

        def infer() -> np.ndarray:
            meta = client.get_model_metadata(MODEL)
            inp = triton_http.InferInput(meta["inputs"][0]["name"], list(batch.shape), "FP32")
            inp.set_data_from_numpy(batch)
            res = client.infer(MODEL, [inp])
            return np.asarray(res.as_numpy(meta["outputs"][0]["name"]))

        def expected(seed: int) -> np.ndarray:
            with torch.no_grad():
                return np.asarray(build_model(seed)(torch.from_numpy(batch)).numpy())

        got = infer()
        assert np.allclose(got, expected(1), atol=1e-5), "Triton's answer differs from torch v1"
        info(
            f"inference on a batch of 5 through Triton == torch v1 (max |diff| {np.abs(got - expected(1)).max():.2e})"
        )

        step("Bump the model to version 2 in the ModelDeployment (as a GitOps commit would)")
        pods_before = sorted(json.loads(cluster.kubectl("get", "pods", "-n", NS_MODELS, "-o", "json").stdout)["items"],
                             key=lambda p: p["metadata"]["name"])  # fmt: skip
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(model_deployment(store, 2)))
        t0 = time.monotonic()
        wait_for(lambda: pull_manifest() != manifest_v1, 60, "the operator to render the new manifest")
        info(
            f"manifest ConfigMap updated in place after {time.monotonic() - t0:.1f}s (a pod's kubelet syncs the mount)"
        )
        wait_for(lambda: ready_versions(agent_port) == [2], 120, "the agent to serve only v2")
        info(f"agent switched Triton to v2 in {time.monotonic() - t0:.1f}s (v1 unloaded after v2 was READY)")
        got = infer()
        assert np.allclose(got, expected(2), atol=1e-5), "Triton's answer differs from torch v2"
        info("inference now == torch v2")
        cluster.kubectl("wait", "--for=condition=Ready", f"md/{MD_NAME}", "-n", NS_MODELS, "--timeout=60s")
        pods_after = sorted(json.loads(cluster.kubectl("get", "pods", "-n", NS_MODELS, "-o", "json").stdout)["items"],
                            key=lambda p: p["metadata"]["name"])  # fmt: skip
        same = [p["metadata"]["uid"] for p in pods_before] == [p["metadata"]["uid"] for p in pods_after]
        info(f"pods unchanged by the in-place rollout: {same}")
        status = json.loads(cluster.kubectl("get", "md", MD_NAME, "-n", NS_MODELS, "-o", "json").stdout)[
            "status"
        ]
        for c in status.get("conditions", []):
            info(f"{c['type']:<12} {c['status']:<6} {c['reason']:<24} {c.get('message', '')[:80]}")

        llm_servers: list[Any] = []
        try:
            llm_step(cluster, work, procs, llm_servers)
        finally:
            for srv in llm_servers:
                srv.stop()

        step(f"Done in {time.monotonic() - t_start:.0f}s")
        if args.keep:
            info(f'cluster kept: eval "$(mdctl cluster env --name demo)"; kubectl get md -A; files in {work}')
        return 0
    except TimeoutError as exc:
        raise SystemExit(f"demo: {exc}") from None
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if triton is not None:
            triton.stop()
        if not args.keep:
            cluster.down(quiet=True)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
