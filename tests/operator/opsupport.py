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


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` (and the last value)."""
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
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
NS_PREFIX = "mdop-"
RESYNC_SECONDS = 5
#: KWOK has no kubelet volume sync to wait for; short, so the window's end is seen within the tests,
#: but long enough that a test polling with kubectl on a busy 2-core machine still sees the window
#: itself (6 s was missed once in a clean-clone CI run).
MANIFEST_SYNC_SECONDS = 15


class OperatorProcess:
    """`mdctl operator run` in a subprocess; start/stop/restart, metrics scraping."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        resync: float = RESYNC_SECONDS,
        namespace: str = f"{NS_PREFIX}*",
        extra_args: tuple[str, ...] = (),
        manifest_sync_seconds: float = MANIFEST_SYNC_SECONDS,
        query_agents: bool = False,
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.resync = resync
        self.namespace = namespace
        self.extra_args = extra_args
        self.manifest_sync_seconds = manifest_sync_seconds
        # Off unless a test runs real agents: KWOK pods' IPs lead nowhere (the default is on).
        self.query_agents = query_agents
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
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
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


def audit_writes(
    cluster: Any, since_line: int, namespace: str, user: str | None = None
) -> list[dict[str, Any]]:
    """Write requests in ``namespace`` logged by the API server after line ``since_line``."""
    out = []
    with Path(cluster.audit_log).open() as f:
        for i, line in enumerate(f):
            if i < since_line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ref = ev.get("objectRef") or {}
            if ref.get("namespace") != namespace:
                continue
            if user and (ev.get("user") or {}).get("username") != user:
                continue
            out.append(ev)
    return out


def audit_lines(cluster: Any) -> int:
    with Path(cluster.audit_log).open() as f:
        return sum(1 for _ in f)


def yaml_doc(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc)
