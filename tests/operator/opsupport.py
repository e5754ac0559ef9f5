"""Helpers shared by the operator tests."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from modeldeploy_runtime.ports import free_ports

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
GOLDEN = HERE / "golden"

T = TypeVar("T")


def load_case(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CASES / f"{name}.yaml").read_text())
    doc["metadata"].setdefault("uid", "11111111-2222-3333-4444-555555555555")
    doc["metadata"].setdefault("generation", 1)
    return doc


def wait_for(
    fn: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.5,
    explain: Callable[[], Any] | None = None,
) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what``, the last value and
    (when given) what ``explain()`` says of the state the wait was stuck in."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # the object may not exist yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    facts = ""
    if explain is not None:
        try:
            facts = f"; state: {explain()!r}"
        except Exception as exc:  # the explanation must not hide the timeout
            facts = f"; state unknown ({exc!r})"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{facts}")


REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
NS_PREFIX = "mdop-"
RESYNC_SECONDS = 5
#: KWOK has no kubelet volume sync to wait for; short, so the window's end is seen within the tests,
#: but long enough that a test polling with kubectl on a busy 2-core machine still sees the window
#: itself (6 s was missed once in a clean-clone CI run).
MANIFEST_SYNC_SECONDS = 15


class OperatorProcess:
    """`mdctl operator run` in a subprocess; start/stop/restart, metrics scraping. With ``source``
    (a tree from ``modeldeploy.cluster.source.export_tree``) the operator of that tree runs, with
    the same Python."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        resync: float = RESYNC_SECONDS,
        namespace: str = f"{NS_PREFIX}*",
        extra_args: tuple[str, ...] = (),
        manifest_sync_seconds: float = MANIFEST_SYNC_SECONDS,
        query_agents: bool = False,
        source: Path | None = None,
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.resync = resync
        self.namespace = namespace
        self.extra_args = extra_args
        self.manifest_sync_seconds = manifest_sync_seconds
        # Off unless a test runs real agents: KWOK pods' IPs lead nowhere (the default is on).
        self.query_agents = query_agents
        self.source = source
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port, self.health_port = free_ports(2)
        self.starts = 0

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.starts += 1
        cmd = [
            sys.executable, "-m", "modeldeploy.cli", "operator", "run",
            "--namespace", self.namespace,
            "--resync-seconds", str(self.resync),
            "--manifest-sync-seconds", str(self.manifest_sync_seconds),
            "--metrics-port", str(self.metrics_port),
            "--health-port", str(self.health_port),
            "--bind-address", "127.0.0.1",
            "--log-format", "json",
            "--query-agents" if self.query_agents else "--no-query-agents",
            *self.extra_args,
        ]  # fmt: skip
        env = self.env
        if self.source is not None:
            from modeldeploy.cluster.source import tree_env

            env = env | tree_env(self.source)
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.source)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"operator not healthy within 60s:\n{self.log_tail()}")

    @contextlib.contextmanager
    def running(self) -> Iterator[OperatorProcess]:
        """Start; on exit stop, and fail unless the operator exited cleanly."""
        self.start()
        try:
            yield self
        finally:
            rc = self.stop()
            assert rc == 0, f"operator did not stop cleanly (exit {rc}):\n{self.log_tail()}"

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self.proc = None
        return rc

    def kill(self) -> None:
        """kill -9, as a crash or an OOM kill would: no cleanup handler runs."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def metrics(self) -> dict[str, float]:
        """Sample name with labels -> value, from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
#: User agents of the operator process: its REST client (kubernetes' OpenAPI client) and kopf.
OPERATOR_UAS = ("OpenAPI-Generator/", "kopf/")


def audit_events(cluster: Any, since_line: int, namespace: str) -> list[dict[str, Any]]:
    """Requests in ``namespace`` logged by the API server after line ``since_line`` (every write;
    reads only by the admin user, see ``AUDIT_POLICY`` in modeldeploy.cluster.local)."""
    out = []
    with Path(cluster.audit_log).open() as f:
        for i, line in enumerate(f):
            if i < since_line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if (ev.get("objectRef") or {}).get("namespace") == namespace:
                out.append(ev)
    return out


def audit_writes(
    cluster: Any, since_line: int, namespace: str, user: str | None = None
) -> list[dict[str, Any]]:
    """Write requests in ``namespace`` logged by the API server after line ``since_line``."""
    return [
        ev
        for ev in audit_events(cluster, since_line, namespace)
        if ev.get("verb") in WRITE_VERBS and (not user or (ev.get("user") or {}).get("username") == user)
    ]


def requests_by_verb(events: list[dict[str, Any]]) -> dict[str, int]:
    """Requests of the operator process by ``verb resource``, each counted once: a watch when it
    starts (ResponseStarted), any other request when it completes."""
    counts: dict[str, int] = {}
    for ev in events:
        if not str(ev.get("userAgent", "")).startswith(OPERATOR_UAS):
            continue
        watch = ev.get("verb") == "watch"
        if ev.get("stage") != ("ResponseStarted" if watch else "ResponseComplete"):
            continue
        ref = ev.get("objectRef") or {}
        key = f"{ev['verb']} {ref.get('resource')}" + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def audit_lines(cluster: Any) -> int:
    with Path(cluster.audit_log).open() as f:
        return sum(1 for _ in f)


def yaml_doc(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc)


# ------------------------------------------------------------------ fault suite and idle audit
TEST_UA = "modeldeploy-tests"


def kube_for_tests(cluster: Any) -> Any:
    """An admin ``Kube`` whose requests carry their own user agent, so the audit log tells them
    from the operator's (which uses the same identity in tests)."""
    from modeldeploy.reconcile.kube import Kube

    api = cluster.api_client()
    api.user_agent = TEST_UA
    return Kube(api)


def small_md(ns: str, name: str, replicas: int = 1, memory: str = "32Mi") -> dict[str, Any]:
    """The ``cpu`` case with tiny requests, so many fit on the KWOK nodes."""
    doc = load_case("cpu")
    doc["metadata"] = {"name": name, "namespace": ns}
    doc["spec"]["replicas"] = replicas
    doc["spec"]["resources"] = {"requests": {"cpu": "10m", "memory": memory}}
    doc["spec"]["runtime"] = {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}
    return doc


def ready_at_latest(md: dict[str, Any]) -> bool:
    """Ready=True for the object's current generation."""
    st = md.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
    return ready and st.get("observedGeneration") == md["metadata"].get("generation")


class AuditTail:
    """Follows the API server's audit log from the current end (byte offset, no re-reading)."""

    def __init__(self, cluster: Any) -> None:
        self.path = Path(cluster.audit_log)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> list[dict[str, Any]]:
        if self.path.stat().st_size < self.offset:  # rotated (--audit-log-maxsize): a new file
            self.offset = 0
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a partly written last line is read next time
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out
