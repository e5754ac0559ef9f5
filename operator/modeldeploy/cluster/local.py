"""A local Kubernetes control plane from the real components, for the demo, tests and benchmarks.

etcd, kube-apiserver (RBAC + PodSecurity admission), kube-controller-manager and kube-scheduler
run as plain processes on loopback; KWOK simulates the nodes (some advertising ``nvidia.com/gpu``)
and turns scheduled pods Running. No container runtime, no GPU, no fake API server.

Binaries come from ``hack/build-bins.sh`` (pinned in ``hack/versions.env``), built once into a cache
folder. Every cluster lives in its own folder (certificates, etcd data, kubeconfigs, logs, a state
file with ports and pids), so a crashed run never blocks the next one: ``up`` finds the stale state,
kills what is left of it and starts clean.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modeldeploy_runtime.ports import free_ports

#: Where the binaries' build script lives in a source checkout (the package cannot carry it: it
#: builds the Go modules pinned in hack/tools/k8s/ and hack/versions.env).
BUILD_SCRIPT_REL = Path("hack") / "build-bins.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm")
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
#: openssl arguments for a new unencrypted EC P-256 key (the CA and every leaf certificate).
NEW_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
CERT_DAYS = "3650"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}

Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The local control plane could not be built, started or reached."""


class CommandError(subprocess.CalledProcessError):
    """A kubectl/helm command against the local cluster failed; the message carries its stderr
    (and the end of its stdout), so a failing test says why rather than just "exit status 1"."""

    def __str__(self) -> str:
        cmd = " ".join(str(c) for c in self.cmd) if isinstance(self.cmd, list | tuple) else str(self.cmd)
        out = [f"`{cmd}` exited {self.returncode}"]
        if self.stderr and str(self.stderr).strip():
            out.append(f"stderr:\n{str(self.stderr).strip()[-4000:]}")
        if self.stdout and str(self.stdout).strip():
            out.append(f"stdout (tail):\n{str(self.stdout).strip()[-2000:]}")
        return "\n".join(out)


def cache_dir() -> Path:
    env = os.environ.get("MODELDEPLOY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "modeldeploy"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_script() -> Path:
    """hack/build-bins.sh of a modeldeploy source checkout: $MODELDEPLOY_CHECKOUT, else the checkout
    this package is imported from (an editable install). An installed wheel has no checkout."""
    env = os.environ.get("MODELDEPLOY_CHECKOUT")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3])  # operator/modeldeploy/cluster/local.py
    for root in candidates:
        if (root / BUILD_SCRIPT_REL).is_file():
            return root / BUILD_SCRIPT_REL
    looked = ", ".join(str(c / BUILD_SCRIPT_REL) for c in candidates)
    raise ClusterError(
        f"mdctl cluster builds the pinned control-plane binaries with {BUILD_SCRIPT_REL} from a "
        f"modeldeploy source checkout, and none was found (looked for {looked}). Install from a "
        "checkout (pip install -e .) or set MODELDEPLOY_CHECKOUT to one."
    )


def bin_dir(build: bool = True, log: Log = _stderr) -> Path:
    """The folder holding the pinned binaries; builds them first (with progress) if asked."""
    script = build_script()
    if not build:
        out = subprocess.run(["bash", str(script), "--dir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip().splitlines()[-1])
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        log(line.rstrip())
    printed = proc.stdout.read()
    if proc.wait() != 0:
        raise ClusterError(f"building the control-plane binaries failed (exit {proc.returncode})")
    return Path(printed.strip().splitlines()[-1])


def find_bin(name: str, build: bool = False) -> Path:
    """Path of one pinned binary (kubectl, helm, ...). Raises ClusterError if it is not built."""
    path = bin_dir(build=build) / name
    if not path.exists():
        raise ClusterError(f"{path} is missing: run `mdctl cluster build` (or hack/build-bins.sh)")
    return path


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``cond`` until it returns something truthy and return that; raise TimeoutError naming
    ``what`` and the last value otherwise. Shared by the cluster start-up, the demo and the tests."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists": look at its state
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class NodePool:
    """A group of KWOK nodes."""

    prefix: str
    count: int
    gpus: int = 0
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    cpu: str = "64"
    memory: str = "512Gi"
    #: Pod CIDR per node, formatted with the node index ``i``, e.g. ``"127.77.{i}.0/24"``: KWOK gives
    #: the node's pods addresses from it (default: kwok's ``--cidr``). A loopback range makes the
    #: fake pods' IPs reachable from this machine, so real processes can stand in for their containers.
    pod_cidr: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for i in range(self.count):
            name = f"{self.prefix}-{i}"
            labels = self.labels | {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "node.kubernetes.io/instance-type": "kwok-gpu" if self.gpus else "kwok-cpu",
            }
            capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "1Ti"}
            taints = [dict(t) for t in self.taints]
            spec: dict[str, Any] = {}
            if self.pod_cidr:
                spec["podCIDR"] = self.pod_cidr.format(i=i)
            if self.gpus:
                labels |= {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": self.gpu_product,
                    "nvidia.com/gpu.count": str(self.gpus),
                }
                capacity["nvidia.com/gpu"] = str(self.gpus)
                taints.append(dict(GPU_TAINT))
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    },
                    "spec": spec | ({"taints": taints} if taints else {}),
                    "status": {
                        "capacity": capacity,
                        "allocatable": capacity,
                        "nodeInfo": {
                            "architecture": "amd64",
                            "operatingSystem": "linux",
                            "kubeletVersion": "fake",
                        },
                    },
                }
            )
        return out


@dataclass
class ClusterState:
    name: str
    server: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    owner_pid: int = 0
    bin_dir: str = ""
    started_at: float = 0.0

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


class LocalCluster:
    """One local control plane. ``ephemeral`` clusters (pytest) die with the process that started them."""

    def __init__(
        self,
        name: str = "default",
        *,
        ephemeral: bool = False,
        gpu_nodes: int = 2,
        cpu_nodes: int = 1,
        gpus_per_node: int = 8,
        gpu_product: str = "NVIDIA-H100-80GB-HBM3",
        root: Path | None = None,
        log: Log = _stderr,
        controller_qps: int | None = None,
    ) -> None:
        self.name = name
        #: ``--kube-api-qps`` of kube-controller-manager and kube-scheduler (burst twice that);
        #: None keeps their defaults (20 and 50 requests/s)
        self.controller_qps = controller_qps
        self.ephemeral = ephemeral
        self.dir = root or cache_dir() / "clusters" / name
        self.pools = [
            NodePool("gpu-node", gpu_nodes, gpus=gpus_per_node, gpu_product=gpu_product),
            NodePool("cpu-node", cpu_nodes),
        ]
        self.log = log
        self._bin_dir: Path | None = None
        self._attached_kubeconfig: Path | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ paths
    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self._attached_kubeconfig or self.dir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """Requests seen by the API server, one JSON event a line (Metadata level): every write
        (create/update/patch/delete), and the reads (get/list/watch) of :data:`ADMIN_USER`."""
        return self.dir / "logs" / "audit.log"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            st = ClusterState.load(self.state_file)
            self._bin_dir = Path(st.bin_dir) if st and st.bin_dir else bin_dir(build=False)
        return self._bin_dir

    @property
    def server(self) -> str:
        if self._attached_kubeconfig:
            cfg = yaml.safe_load(self._attached_kubeconfig.read_text())
            return str(cfg["clusters"][0]["cluster"]["server"])
        st = ClusterState.load(self.state_file)
        if not st or not st.server:
            raise ClusterError(f"cluster {self.name!r} is not running")
        return st.server

    @classmethod
    def attach(cls, kubeconfig: Path) -> LocalCluster:
        """Use an already running cluster (e.g. from `mdctl cluster up`) through its kubeconfig."""
        c = cls(name="attached")
        c._attached_kubeconfig = Path(kubeconfig)
        cand = Path(kubeconfig).parent
        if (cand / "state.json").exists():
            c.dir = cand
        return c

    # ---------------------------------------------------------------- running
    @property
    def kube_cache_dir(self) -> Path:
        """kubectl's and helm's discovery/HTTP cache for this cluster only (``KUBECACHEDIR``).

        The default ``~/.kube/cache`` is keyed by host:port; local clusters reuse loopback ports,
        so a parallel or earlier cluster's cached discovery would otherwise answer for this one."""
        return self.kubeconfig.parent / "kube-cache"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.kube_cache_dir)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _run(
        self, binary: str, args: Iterable[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / binary), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", ["--kubeconfig", str(self.kubeconfig), *args], input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self._run("helm", ["--kubeconfig", str(self.kubeconfig), *args], input, check, timeout)

    def wait_established(self, *crds: str, timeout: float = 120) -> None:
        """Wait until each CRD is ``Established``.

        Not ``kubectl wait --for=condition=Established``: right after a CRD is created its
        ``status.conditions`` is ``null`` (the field has no omitempty) until the API server's naming
        controller fills it in, and kubectl wait exits 1 at once on a null list (".status.conditions
        accessor error") instead of waiting. On a loaded machine that window is wide enough to hit.
        On timeout the error shows the CRD's last conditions and kubectl's stderr."""
        last: dict[str, str] = {}

        def established() -> bool:
            for name in crds:
                out = self.kubectl("get", "crd", name, "-o", "json", check=False, timeout=30)
                if out.returncode != 0:
                    last[name] = out.stderr.strip()
                    return False
                conds = (json.loads(out.stdout).get("status") or {}).get("conditions") or []
                if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                    last[name] = json.dumps(conds)
                    return False
            return True

        try:
            wait_for(established, timeout, f"CRDs {', '.join(crds)} Established")
        except TimeoutError as exc:
            raise ClusterError(f"{exc}; last seen: {last}") from None

    def api_client(self) -> Any:
        from kubernetes import config  # operator dependency; imported lazily

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubeconfig_for_token(self, token: str, path: Path) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount token)."""
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "token", "context": {"cluster": "local", "user": "token"}}],
            "current-context": "token",
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    # ----------------------------------------------------------------- status
    def is_running(self) -> bool:
        st = ClusterState.load(self.state_file)
        if not st or not st.pids:
            return False
        if not all(_pid_alive(pid) for pid in st.pids.values()):
            return False
        return self._readyz(st.server, timeout=3)

    def status(self) -> dict[str, Any]:
        st = ClusterState.load(self.state_file)
        if not st:
            return {"name": self.name, "running": False, "dir": str(self.dir)}
        procs = {k: _pid_alive(v) for k, v in st.pids.items()}
        return {
            "name": self.name,
            "running": bool(procs) and all(procs.values()) and self._readyz(st.server, timeout=3),
            "server": st.server,
            "kubeconfig": str(self.kubeconfig),
            "processes": procs,
            "dir": str(self.dir),
        }

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _readyz(self, server: str, timeout: float = 2) -> bool:
        if not server or not (self.pki / "admin.crt").exists():
            return False
        host, port = server.removeprefix("https://").rsplit(":", 1)
        try:
            conn = http.client.HTTPSConnection(host, int(port), context=self._ssl_context(), timeout=timeout)
            conn.request("GET", "/readyz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False

    # --------------------------------------------------------------- lifecycle
    def up(self, build: bool = True) -> LocalCluster:
        """Start the cluster (no-op if it is already running and healthy)."""
        t0 = time.monotonic()
        if self.ephemeral:
            reap_stale_clusters(self.dir.parent, log=self.log)
        if self.is_running():
            self.log(f"cluster {self.name!r} is already running at {self.server}")
            return self
        self.down(quiet=True)  # leftovers of a crashed/killed run: processes, data, ports
        self._bin_dir = bin_dir(build=build, log=self.log)
        self.timings["build"] = time.monotonic() - t0
        t1 = time.monotonic()
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self._write_pki()
        names = ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        server = f"https://127.0.0.1:{ports['apiserver']}"
        st = ClusterState(
            name=self.name,
            server=server,
            ports=ports,
            owner_pid=os.getpid() if self.ephemeral else 0,
            bin_dir=str(self._bin_dir),
            started_at=time.time(),
        )
        st.save(self.state_file)
        self._write_kubeconfigs(server)
        try:
            st.pids["etcd"] = self._spawn("etcd", self._etcd_args(ports))
            st.save(self.state_file)
            self._wait_port(ports["etcd"], "etcd")
            st.pids["kube-apiserver"] = self._spawn("kube-apiserver", self._apiserver_args(ports))
            st.save(self.state_file)
            self._wait(lambda: self._readyz(server), 90, "kube-apiserver /readyz", "kube-apiserver")
            self.timings["apiserver"] = time.monotonic() - t1
            st.pids["kube-controller-manager"] = self._spawn("kube-controller-manager", self._kcm_args(ports))
            st.pids["kube-scheduler"] = self._spawn("kube-scheduler", self._scheduler_args(ports))
            st.pids["kwok"] = self._spawn("kwok", self._kwok_args(ports))
            st.save(self.state_file)
            self.add_nodes(*self.pools, wait=False)
            self._wait(self._nodes_ready, 90, "all nodes Ready", "kwok")
            self._wait(
                self._default_sa_exists, 90, "ServiceAccount default/default", "kube-controller-manager"
            )
        except BaseException:
            self.log(f"cluster start failed; logs are in {self.dir / 'logs'}")
            self.down(quiet=True, keep_logs=True)
            raise
        self.timings["start"] = time.monotonic() - t1
        self.log(
            f"cluster {self.name!r} ready in {self.timings['start']:.1f}s "
            f"(API ready after {self.timings['apiserver']:.1f}s): {server}, "
            f"{sum(p.count for p in self.pools)} KWOK nodes"
        )
        return self

    def down(self, quiet: bool = False, keep_logs: bool = False) -> None:
        """Stop every process of this cluster and remove its folder (nothing is left behind)."""
        st = ClusterState.load(self.state_file)
        if st:
            for comp, pid in reversed(list(st.pids.items())):
                _terminate(pid, str(self.dir), comp)
        if self.dir.exists():
            if keep_logs:
                for child in self.dir.iterdir():
                    if child.name != "logs":
                        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        if not quiet:
            self.log(f"cluster {self.name!r} stopped and removed")

    def restart_apiserver(self, outage: float = 0.0, kill: bool = True) -> float:
        """Stop kube-apiserver (SIGKILL, like a crash, unless ``kill`` is false), keep it down for
        ``outage`` seconds, then start it again with the same flags, port, certificates and etcd
        data, and wait until it is ready. Everything else keeps running and must reconnect by
        itself. Returns the seconds from the stop until /readyz answered again."""
        st = ClusterState.load(self.state_file)
        if not st or "kube-apiserver" not in st.pids:
            raise ClusterError(f"cluster {self.name!r} has no kube-apiserver to restart (state: {st})")
        t0 = time.monotonic()
        pid = st.pids["kube-apiserver"]
        if kill:
            if _pid_alive(pid) and str(self.dir) in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

            def gone() -> bool:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
                return not _pid_alive(pid)

            wait_for(gone, 30, f"kube-apiserver (pid {pid}) to exit", interval=0.1)
        else:
            _terminate(pid, str(self.dir), "kube-apiserver")
        if outage > 0:
            time.sleep(outage)  # the outage itself, as asked
        st.pids["kube-apiserver"] = self._spawn("kube-apiserver", self._apiserver_args(st.ports))
        st.save(self.state_file)
        self._wait(lambda: self._readyz(st.server), 90, "kube-apiserver /readyz", "kube-apiserver")
        return time.monotonic() - t0

    # ---------------------------------------------------------------- helpers
    def _spawn(self, binary: str, args: list[str]) -> int:
        logf = open(self.dir / "logs" / f"{binary}.log", "ab")
        proc = subprocess.Popen(
            [str(self.bin_dir / binary), *args],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            preexec_fn=_die_with_parent if self.ephemeral else os.setsid,
        )
        logf.close()
        return proc.pid

    def _log_tail(self, component: str, lines: int = 25) -> str:
        path = self.dir / "logs" / f"{component}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait(self, cond: Callable[[], bool], timeout: float, what: str, component: str) -> None:
        st = ClusterState.load(self.state_file)

        def done_or_crashed() -> bool:
            if cond():
                return True
            for comp, pid in (st.pids if st else {}).items():
                if not _pid_alive(pid):
                    raise ClusterError(f"{comp} exited while waiting for {what}:\n{self._log_tail(comp)}")
            return False

        try:
            wait_for(done_or_crashed, timeout, what, interval=0.25)
        except TimeoutError as exc:
            raise ClusterError(f"{exc}:\n{self._log_tail(component)}") from None

    def _wait_port(self, port: int, component: str) -> None:
        def ok() -> bool:
            with socket.socket() as s:
                s.settimeout(0.5)
                return s.connect_ex(("127.0.0.1", port)) == 0

        self._wait(ok, 30, f"{component} on port {port}", component)

    @contextlib.contextmanager
    def scratch_namespace(self, name: str, labels: dict[str, str] | None = None) -> Iterator[str]:
        """A namespace for the length of a test: created (with ``labels``), then deleted without
        waiting for its contents to go."""
        meta: dict[str, Any] = {"name": name} | ({"labels": labels} if labels else {})
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        )
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)

    def add_nodes(self, *pools: NodePool, wait: bool = True) -> list[str]:
        """Create (server-side apply) the KWOK nodes of ``pools``; with ``wait``, until all are Ready.
        Returns their names. The cluster's own pools are created by :meth:`up`."""
        nodes = [n for pool in pools for n in pool.nodes()]
        self.kubectl(
            "apply", "--server-side", "--field-manager=modeldeploy-cluster", "-f", "-",
            input=yaml.safe_dump_all(nodes),
        )  # fmt: skip
        names = [n["metadata"]["name"] for n in nodes]
        if wait:
            wait_for(lambda: self._nodes_ready(names), 90, f"nodes {', '.join(names)} Ready")
        return names

    def _nodes_ready(self, names: list[str] | None = None) -> bool:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode != 0:
            return False
        items = json.loads(out.stdout)["items"]
        want = set(names) if names is not None else None
        ready = [
            n
            for n in items
            if (want is None or n["metadata"]["name"] in want)
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) >= (len(want) if want is not None else sum(p.count for p in self.pools))

    def _default_sa_exists(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

    # ------------------------------------------------------------- arguments
    def _etcd_args(self, p: dict[str, int]) -> list[str]:
        client = f"http://127.0.0.1:{p['etcd']}"
        peer = f"http://127.0.0.1:{p['etcd_peer']}"
        return [
            "--name=local",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, p: dict[str, int]) -> list[str]:
        k = self.pki
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return [
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={p['apiserver']}",
            f"--cert-dir={k}",
            f"--tls-cert-file={k / 'apiserver.crt'}",
            f"--tls-private-key-file={k / 'apiserver.key'}",
            f"--client-ca-file={k / 'ca.crt'}",
            f"--service-account-key-file={k / 'sa.pub'}",
            f"--service-account-signing-key-file={k / 'sa.key'}",
            f"--service-account-issuer={SA_ISSUER}",
            "--authorization-mode=Node,RBAC",
            # PodSecurity is among the default admission plugins; NodeRestriction as on real clusters.
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=200",
            "--v=1",
        ]

    def _component_args(self, component: str, port: int, cert_dir: str) -> list[str]:
        """Flags shared by kube-controller-manager and kube-scheduler: their client certificate
        kubeconfig (also for delegated authn/authz) and a loopback-only secure port."""
        kc = self.dir / f"{component}.kubeconfig"
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.dir / cert_dir}",
        ]

    def _kcm_args(self, p: dict[str, int]) -> list[str]:
        return [
            *self._component_args("kube-controller-manager", p["kcm"], "kcm-certs"),
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            "--controllers=*",
            "--leader-elect=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--v=1",
            *self._qps_args(),
        ]

    def _scheduler_args(self, p: dict[str, int]) -> list[str]:
        return [
            *self._component_args("kube-scheduler", p["scheduler"], "scheduler-certs"),
            "--leader-elect=false",
            "--v=1",
            *self._qps_args(),
        ]

    def _qps_args(self) -> list[str]:
        q = self.controller_qps
        return [] if q is None else [f"--kube-api-qps={q}", f"--kube-api-burst={2 * q}"]

    def _kwok_args(self, p: dict[str, int]) -> list[str]:
        return [
            f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
            f"--config={self.bin_dir / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.250.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{p['kwok']}",
        ]

    # ------------------------------------------------------------------ certs
    def _openssl(self, *args: str) -> None:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=self.pki)
        if proc.returncode != 0:
            raise ClusterError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")

    def _leaf(self, name: str, subject: str, usage: str, sans: str | None = None) -> None:
        ext = self.pki / f"{name}.ext"
        lines = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        if sans:
            lines.append(f"subjectAltName={sans}")
        ext.write_text("\n".join(lines) + "\n")
        self._openssl(
            "req", "-new", *NEW_EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject
        )
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", CERT_DAYS, "-extfile", ext.name,
        )  # fmt: skip

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self._openssl(
            "req", "-x509", *NEW_EC_KEY, "-keyout", "ca.key", "-out", "ca.crt", "-days", CERT_DAYS,
            "-subj", f"/CN=modeldeploy-local-ca-{self.name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
        sans = (
            "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
        )
        self._leaf("apiserver", "/CN=kube-apiserver", "serverAuth", sans)
        self._leaf("admin", f"/O=system:masters/CN={ADMIN_USER}", "clientAuth")
        self._leaf("kube-controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
        self._leaf("kube-scheduler", "/CN=system:kube-scheduler", "clientAuth")
        self._leaf("kwok", "/O=system:masters/CN=kwok", "clientAuth")
        self._openssl("genrsa", "-out", "sa.key", "2048")
        self._openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        for f in self.pki.glob("*.key"):
            f.chmod(0o600)

    def _write_kubeconfigs(self, server: str) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        ca = b64(self.pki / "ca.crt")
        for user, file in (
            ("admin", "admin.kubeconfig"),
            ("kube-controller-manager", "kube-controller-manager.kubeconfig"),
            ("kube-scheduler", "kube-scheduler.kubeconfig"),
            ("kwok", "kwok.kubeconfig"),
        ):
            ctx = f"modeldeploy-{self.name}"
            cfg = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": ctx, "cluster": {"server": server, "certificate-authority-data": ca}}],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate-data": b64(self.pki / f"{user}.crt"),
                            "client-key-data": b64(self.pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [
                    {"name": ctx, "context": {"cluster": ctx, "user": user, "namespace": "default"}}
                ],
                "current-context": ctx,
            }
            path = self.dir / file
            path.write_text(yaml.safe_dump(cfg))
            path.chmod(0o600)


#: The identity of ``admin.kubeconfig`` (and so of an operator run with it in tests and benchmarks).
ADMIN_USER = "modeldeploy-admin"

AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  # Every write, at Metadata level: enough to count what a controller changes, cheap to keep.
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  # Reads of API resources (get/list/watch) by the admin user only: the operator runs as that user
  # in tests and benchmarks, so its reads at idle can be counted. Discovery and health probes
  # (non-resource URLs) and the reads of the controllers and KWOK stay out (volume).
  - level: None
    nonResourceURLs: ["*"]
  - level: Metadata
    users: ["{ADMIN_USER}"]
    verbs: ["get", "list", "watch"]
  - level: None
"""


def _terminate(pid: int, marker: str, component: str, grace: float = 10) -> None:
    """SIGTERM a process group we started (checked by its command line), then SIGKILL."""
    if not _pid_alive(pid):
        return
    if marker not in _cmdline(pid) and component not in _cmdline(pid):
        return  # the pid was recycled by something that is not ours
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def reap_stale_clusters(parent: Path, log: Log = _stderr) -> list[str]:
    """Remove ephemeral (pytest) clusters whose owning process is gone."""
    reaped: list[str] = []
    if not parent.exists():
        return reaped
    for d in parent.iterdir():
        st = ClusterState.load(d / "state.json")
        if st and st.owner_pid and not _pid_alive(st.owner_pid):
            LocalCluster(name=d.name, root=d, log=log).down(quiet=True)
            reaped.append(d.name)
            log(f"removed stale cluster {d.name!r} (its owner process {st.owner_pid} is gone)")
    return reaped
