"""Start the real ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel (hack/install-triton.sh).

The wheel contains a full Triton Inference Server build with the python backend only:

* ``pytriton/tritonserver/bin/tritonserver`` — the server binary,
* ``nvidia_pytriton.libs/`` — the shared libraries it links against (auditwheel-vendored),
* ``pytriton/tritonserver/backends/python/`` — ``libtriton_python.so`` + ``triton_python_backend_utils.py``,
* ``pytriton/tritonserver/python_backend_stubs/<X.Y>/triton_python_backend_stub`` — one stub per
  Python version; the python backend runs each model instance in such a stub process.

:func:`prepare_backends` builds a backends directory whose ``python/`` folder holds the stub for the
*running* interpreter's version, :func:`triton_env` builds the environment (``LD_LIBRARY_PATH`` with the
vendored libs and this Python's ``libpython``; ``PYTHONPATH`` with this environment's site-packages so
models can import torch and numpy), and :class:`TritonServer` starts/stops the server.

Run ``python -m modeldeploy_runtime.triton`` to print what would be used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Literal

import requests

from modeldeploy_runtime.ports import free_ports

PYTRITON_DIST = "nvidia-pytriton"
ModelControlMode = Literal["none", "poll", "explicit"]


class TritonNotInstalled(RuntimeError):
    """The nvidia-pytriton wheel (which ships tritonserver) is not installed."""


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message includes the tail of its log."""


@dataclass(frozen=True)
class TritonInstall:
    version: str
    root: Path  # .../site-packages/pytriton/tritonserver
    binary: Path
    libs: Path  # .../site-packages/nvidia_pytriton.libs
    backends: Path  # the wheel's own backends dir (python backend without stub)
    stubs: Path  # python_backend_stubs/

    def stub_for(self, python_version: str | None = None) -> Path:
        ver = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stubs / ver / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in self.stubs.iterdir()) if self.stubs.is_dir() else []
            raise TritonNotInstalled(
                f"{stub}: no python backend stub for Python {ver} in {PYTRITON_DIST} {self.version} "
                f"(available: {', '.join(have) or 'none'})"
            )
        return stub


def find_triton() -> TritonInstall:
    """Locate tritonserver in the installed nvidia-pytriton wheel (or under $MODELDEPLOY_TRITON_ROOT)."""
    override = os.environ.get("MODELDEPLOY_TRITON_ROOT")
    if override:
        root = Path(override)
        libs = Path(os.environ.get("MODELDEPLOY_TRITON_LIBS", root.parent.parent / "nvidia_pytriton.libs"))
        version = "custom"
    else:
        try:
            dist = metadata.distribution(PYTRITON_DIST)
        except metadata.PackageNotFoundError:
            raise TritonNotInstalled(
                f"{PYTRITON_DIST} is not installed in {sys.prefix}; run hack/install-triton.sh"
            ) from None
        root = Path(str(dist.locate_file("pytriton/tritonserver")))
        libs = Path(str(dist.locate_file("nvidia_pytriton.libs")))
        version = dist.version
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        raise TritonNotInstalled(f"{binary}: tritonserver binary missing; run hack/install-triton.sh")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return TritonInstall(
        version=version,
        root=root,
        binary=binary,
        libs=libs,
        backends=root / "backends",
        stubs=root / "python_backend_stubs",
    )


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeldeploy" / "triton-backends"


def prepare_backends(install: TritonInstall | None = None, dest: Path | None = None) -> Path:
    """A backends directory for ``--backend-directory``: the wheel's backends, with the python
    backend's stub for the running Python version copied into ``python/``. Idempotent; cached."""
    install = install or find_triton()
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    dest = dest or _default_cache() / f"{install.version}-py{pyver}"
    marker = dest / ".complete"
    # resolved: worktrees whose .venv is a symlink to one shared venv share one cache entry
    # (comparing unresolved paths made them replace it under each other's running servers)
    root = str(install.root.resolve())
    if marker.is_file() and marker.read_text() == root:
        return dest
    stub = install.stub_for(pyver)
    tmp = Path(tempfile.mkdtemp(prefix=".backends-", dir=dest.parent if dest.parent.exists() else None))
    try:
        for backend in install.backends.iterdir():
            if backend.is_dir():
                shutil.copytree(backend, tmp / backend.name, ignore=shutil.ignore_patterns("__pycache__"))
        py = tmp / "python"
        py.mkdir(exist_ok=True)
        shutil.copy2(stub, py / "triton_python_backend_stub")
        (py / "triton_python_backend_stub").chmod(0o755)
        (tmp / ".complete").write_text(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:
            # another process prepared it concurrently: use theirs if it is complete
            if not (marker.is_file() and marker.read_text() == root):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def python_libdir() -> str:
    """The directory holding this interpreter's libpython (the stub links against it)."""
    return str(sysconfig.get_config_var("LIBDIR") or Path(sys.base_prefix) / "lib")


STUB_ENV_DIRNAME = "triton-stub-env"


def stub_python_env() -> Path | None:
    """The Python environment the python-backend stub runs in, when there is one.

    The stub in nvidia-pytriton 0.7.0 is built against the numpy 1.x C API: with numpy 2 it reads
    tensors wrongly. hack/install-triton.sh therefore creates ``<venv>/triton-stub-env``: a venv with
    ``numpy<2`` whose ``.pth`` adds this venv's site-packages after its own (torch, the runtime...).
    ``$MODELDEPLOY_TRITON_STUB_ENV`` overrides the location.
    """
    env = os.environ.get("MODELDEPLOY_TRITON_STUB_ENV")
    path = Path(env) if env else Path(sys.prefix) / STUB_ENV_DIRNAME
    return path if (path / "bin" / "python3").exists() else None


def triton_env(
    install: TritonInstall | None = None,
    backends: Path | None = None,
    base: Mapping[str, str] | None = None,
    extra_pythonpath: Sequence[str] = (),
) -> dict[str, str]:
    install = install or find_triton()
    env = dict(os.environ if base is None else base)
    ld = [str(install.libs), python_libdir()]
    if env.get("LD_LIBRARY_PATH"):
        ld.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(ld)
    # The stub process runs the base interpreter's libpython, so it must be told about this
    # environment's site-packages (torch, numpy) and the backend's utils module.
    pp = [*extra_pythonpath, *site.getsitepackages()]
    if backends is not None:
        pp.append(str(backends / "python"))
    if env.get("PYTHONPATH"):
        pp.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pp)
    # The stub embeds Python in isolated mode (PYTHONPATH is ignored): it finds its prefix through
    # the `python3` on PATH, so the stub environment's bin/ (numpy<2 + this environment's
    # site-packages, see stub_python_env) or else this environment's bin/ must come first.
    stub_env = stub_python_env()
    bindir = str(stub_env / "bin") if stub_env else str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", os.defpath)])
    return env


class TritonServer:
    """tritonserver on a model repository, as a context manager.

    >>> with TritonServer(repo, model_control_mode="explicit") as srv:
    ...     requests.get(srv.http_url + "/v2/health/ready")

    Ports default to free loopback ports. The log goes to ``log_path`` (a temp file by default) and
    its tail is part of any start error. ``stop()`` sends SIGTERM to the server's process group
    (the server and its python-backend stubs), then SIGKILL after ``stop_timeout``.
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        model_control_mode: ModelControlMode = "explicit",
        load_models: Sequence[str] = (),
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        strict_readiness: bool = True,
        log_path: str | Path | None = None,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        exit_timeout_secs: int = 2,
    ) -> None:
        self.model_repository = Path(model_repository)
        self.model_control_mode = model_control_mode
        self.load_models = list(load_models)
        self.host = host
        spare = iter(free_ports(3, host))  # distinct, for the ports not given
        self.http_port = http_port or next(spare)
        self.grpc_port = grpc_port or next(spare)
        self.metrics_port = metrics_port or next(spare)
        self.strict_readiness = strict_readiness
        self._own_log = log_path is None
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        )
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.exit_timeout_secs = exit_timeout_secs
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    # URLs -------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def http_address(self) -> str:
        """host:port, as tritonclient.http.InferenceServerClient(url=...) wants it."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        args = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--model-control-mode={self.model_control_mode}",
            f"--strict-readiness={'true' if self.strict_readiness else 'false'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--backend-directory={backends}",
            f"--exit-timeout-secs={self.exit_timeout_secs}",
            f"--log-verbose={self.log_verbose}",
        ]
        args += [f"--load-model={m}" for m in self.load_models]
        return args + self.extra_args

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> TritonServer:
        if self.process is not None:
            raise RuntimeError("tritonserver already started")
        install = find_triton()
        backends = prepare_backends(install)
        env = triton_env(install, backends)
        log = open(self.log_path, "ab")  # closed in stop()
        self._log_file = log
        self.process = subprocess.Popen(
            self.command(install, backends),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() reaches the stubs too
        )
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = self.http_url + "/v2/health/ready"
        while True:
            assert self.process is not None
            rc = self.process.poll()
            if rc is not None:
                raise TritonStartError(
                    f"tritonserver exited with code {rc} before becoming ready; log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver not ready at {url} after {timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """Stop the server and every process of its group; returns its exit code."""
        proc = self.process
        rc: int | None = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            # stubs left behind (they are in the same group) must not outlive the server
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.returncode
            self.process = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        return rc

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> int:
    try:
        inst = find_triton()
        backends = prepare_backends(inst)
    except (TritonNotInstalled, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env = triton_env(inst, backends)
    print(f"nvidia-pytriton {inst.version}")
    print(f"tritonserver     {inst.binary}")
    print(f"backends         {backends}")
    print(f"LD_LIBRARY_PATH  {env['LD_LIBRARY_PATH']}")
    print(f"PYTHONPATH       {env['PYTHONPATH']}")
    print(f"stub Python env  {stub_python_env() or '(none: this environment)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
