"""The runtime agent: keeps a pod's model repository and Triton's loaded versions in line with the
model manifest written by the operator.

* ``init`` mode fetches every wanted version and writes each model's ``config.pbtxt``, then exits.
* ``sidecar`` mode watches the manifest file (a mounted ConfigMap: polled by content) and, per
  model: fetches new versions, rewrites ``version_policy`` to ``specific`` = the wanted versions and
  calls Triton's repository ``load``: Triton keeps serving the old versions until the new ones are
  READY, then unloads the old ones (see :meth:`Agent.sync_model`). A version that fails to fetch or
  load is reported and the served ones stay.
* HTTP: ``/healthz`` (alive), ``/ready`` (200 only when every version the manifest expects is READY
  in Triton, checked live with ``/v2/models/<m>/versions/<v>/ready``), ``/serving`` (200 when every
  model has at least one READY version: the pod's readiness probe, so a pod stays in its Service
  while a new version loads or after it failed), ``/status`` (:class:`~modeldeploy_runtime.agentapi.AgentStatus`:
  per model/version state, reason, message, the served versions and the manifest generation: the
  exact-versions truth the operator reads) and ``PUT /manifest`` (the operator pushes a newer
  manifest, signed with the operator's key for this ModelDeployment (pushsign.py); see
  :meth:`Agent.check_push` and :meth:`Agent.accept_push`).
* The mounted ConfigMap stays the source of truth a restarted pod reads; between it and a pushed
  manifest the agent takes whichever has the higher generation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import requests

from modeldeploy_runtime.agentapi import (
    MANIFEST_PATH,
    READY_PATH,
    SERVING_PATH,
    STATUS_PATH,
    AgentStatus,
    CacheReport,
    FetchReport,
    ManifestPush,
    ModelReport,
    PushReply,
    VersionReport,
)
from modeldeploy_runtime.config import CONFIG_FILE, ModelConfig, VersionPolicy
from modeldeploy_runtime.control import control_headers
from modeldeploy_runtime.fetch import TMP_DIR, Fetcher, FetchError
from modeldeploy_runtime.llm_engine import (
    ENGINE_DIR,
    engine_model_name,
    has_text_front,
    tensorrtllm_config,
    vllm_config,
    write_engine_args,
    write_engine_entry,
)
from modeldeploy_runtime.manifest import FORMATS, ManifestModel, ModelManifest
from modeldeploy_runtime.package import PACKAGE_META
from modeldeploy_runtime.provenance import Provenance, SignatureError
from modeldeploy_runtime.pushsign import PUSH_KEY_FILE, SIGNATURE_HEADER, read_public_key, verify

log = logging.getLogger("modeldeploy.runtime.agent")

FETCH_RETRY_BASE = 5.0
MAX_PUSH_BYTES = 4 * 1024 * 1024
FETCH_RETRY_MAX = 300.0
#: Models synced at once. Each model has its own folder, config and Triton load, and Triton loads
#: different models in parallel (``--model-load-thread-count``, default 4), so switching n models
#: costs about one load instead of n in a row.
PARALLEL_MODEL_SYNCS = 4


@dataclass
class VersionStatus:
    version: int
    state: str = "Pending"  # Pending | Loading | Ready | Failed | Unloaded
    reason: str = ""
    message: str = ""

    def report(self) -> VersionReport:
        return VersionReport.model_validate(
            {"version": self.version, "state": self.state, "reason": self.reason, "message": self.message}
        )


class TritonAPI:
    """The few Triton HTTP/REST calls the agent needs (KServe v2 + repository extension)."""

    def __init__(
        self, url: str, timeout: float = 5.0, load_timeout: float = 600.0, control_key: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.session = requests.Session()
        # Triton's restricted model-control API (modeldeploy_runtime.control): every call carries the
        # key; the open categories ignore it.
        self.session.headers.update(control_headers(control_key))

    def live(self) -> bool:
        try:
            return self.session.get(f"{self.url}/v2/health/live", timeout=self.timeout).status_code == 200
        except requests.RequestException:
            return False

    def index(self) -> list[dict[str, Any]]:
        r = self.session.post(f"{self.url}/v2/repository/index", json={}, timeout=self.timeout)
        r.raise_for_status()
        data = r.json()
        return data if isinstance(data, list) else []

    def model_states(self, model: str) -> dict[int, tuple[str, str]]:
        """version -> (Triton state, reason) for one model, from the repository index."""
        out: dict[int, tuple[str, str]] = {}
        for e in self.index():
            if e.get("name") == model and str(e.get("version", "")).isdigit():
                out[int(e["version"])] = (str(e.get("state", "")), str(e.get("reason", "")))
        return out

    def load(self, model: str) -> str | None:
        """Load (or reload) a model; returns Triton's error message or None."""
        try:
            r = self.session.post(
                f"{self.url}/v2/repository/models/{model}/load", json={}, timeout=self.load_timeout
            )
        except requests.RequestException as exc:
            return f"load request failed: {exc}"
        if r.status_code == 200:
            return None
        try:
            return str(r.json().get("error", r.text))
        except ValueError:
            return r.text or f"HTTP {r.status_code}"

    def unload(self, model: str) -> str | None:
        try:
            r = self.session.post(
                f"{self.url}/v2/repository/models/{model}/unload", json={}, timeout=self.load_timeout
            )
        except requests.RequestException as exc:
            return f"unload request failed: {exc}"
        return None if r.status_code == 200 else r.text

    def version_ready(self, model: str, version: int) -> bool:
        try:
            r = self.session.get(
                f"{self.url}/v2/models/{model}/versions/{version}/ready", timeout=self.timeout
            )
            return r.status_code == 200
        except requests.RequestException:
            return False


def _short(msg: str, limit: int = 600) -> str:
    """First meaningful lines of a Triton error (python tracebacks are long)."""
    msg = msg.strip()
    if "\n\nAt:" in msg:
        msg = msg.split("\n\nAt:")[0]
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _apply_io(cfg: ModelConfig, model: ManifestModel) -> None:
    """The manifest's tensors, max_batch_size and dynamic batching over a model's config."""
    from modeldeploy_runtime.config import DynamicBatching, TensorSpec

    if model.inputs:
        cfg.inputs = [TensorSpec(t.name, t.dataType, list(t.dims)) for t in model.inputs]
        cfg.max_batch_size = model.maxBatchSize
    elif model.maxBatchSize > 0:
        cfg.max_batch_size = model.maxBatchSize
    if model.outputs:
        cfg.outputs = [TensorSpec(t.name, t.dataType, list(t.dims)) for t in model.outputs]
    if model.dynamicBatching is not None:
        cfg.dynamic_batching = DynamicBatching(
            list(model.dynamicBatching.preferredBatchSizes),
            model.dynamicBatching.maxQueueDelayMicroseconds,
        )
    if cfg.max_batch_size == 0:
        cfg.dynamic_batching = None


class Agent:
    def __init__(
        self,
        manifest_path: str | Path,
        repository: str | Path,
        triton_url: str = "http://127.0.0.1:8000",
        *,
        fetcher: Fetcher | None = None,
        poll_interval: float = 1.0,
        resync_interval: float = 5.0,
        push_owner: str | None = None,
        push_key_path: str | Path | None = None,
        control_key: str | None = None,
    ) -> None:
        self.manifest_path = Path(manifest_path)
        self.repository = Path(repository)
        self.triton = TritonAPI(triton_url, control_key=control_key)
        self.fetcher = fetcher or Fetcher(self.repository)
        self.poll_interval = poll_interval
        self.resync_interval = resync_interval
        self.lock = threading.RLock()
        self.manifest: ModelManifest | None = None
        self.manifest_hash: str | None = None
        self.applied_hash: str | None = None
        self.states: dict[str, dict[int, VersionStatus]] = {}
        self.last_error: str | None = None
        self._failed_loads: dict[tuple[str, int], str] = {}  # (model, version) -> source@sha of a failed load
        self._fetch_retry: dict[tuple[str, int], tuple[float, float]] = {}  # -> (next attempt, delay)
        self.switch_log: list[dict[str, Any]] = []  # timings of version switches (for tests/bench)
        # Pushes: signed by the operator for this owner (pushsign.py), checked against the public
        # key the kubelet mounts beside the manifest. Without an owner pushing is off (403).
        self.push_owner = push_owner or None
        self.push_key_path = (
            Path(push_key_path) if push_key_path else self.manifest_path.parent / PUSH_KEY_FILE
        )
        self._pushed: tuple[ModelManifest, str] | None = None  # newest manifest pushed by the operator
        self._wake = threading.Event()  # set by a push: sync now rather than at the next poll
        self.manifest_source: Literal["file", "push", ""] = ""
        self.applied_generation = 0
        self.provenance = Provenance()  # signature checks + digest/signer per version (#15)
        self.origins: dict[tuple[str, int], dict[str, Any]] = {}  # how each version got here

    # ------------------------------------------------------------------------------------ manifest
    def read_manifest(self) -> tuple[ModelManifest, str]:
        data = self.manifest_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        try:
            m = ModelManifest.from_json(data.decode())
        except Exception as exc:
            raise ValueError(f"{self.manifest_path}: invalid model manifest: {exc}") from exc
        return m, digest

    def _set(self, model: str, version: int, state: str, reason: str = "", message: str = "") -> None:
        with self.lock:
            self.states.setdefault(model, {})[version] = VersionStatus(version, state, reason, message)
        if state == "Failed":
            self.last_error = f"{model} version {version}: {message or reason}"
            log.error("%s", self.last_error)

    def _error(self, msg: str) -> None:
        with self.lock:
            self.last_error = msg
        log.error("%s", msg)

    # -------------------------------------------------------------------------------------- config
    def model_config(self, model: ManifestModel, versions: list[int]) -> ModelConfig:
        """config.pbtxt for a model serving ``versions``: the packaged config of the newest version
        (modeldeploy.json) overridden by what the manifest sets, with a ``specific`` policy."""
        cfg: ModelConfig | None = None
        for v in sorted(versions, reverse=True):
            meta = self.repository / model.name / str(v) / PACKAGE_META
            if meta.is_file():
                with contextlib.suppress(Exception):
                    cfg = ModelConfig.from_dict(json.loads(meta.read_text())["config"])
                    break
        if cfg is None and model.format in ("vllm", "tensorrtllm"):
            cfg = vllm_config(model.name) if model.format == "vllm" else tensorrtllm_config(model.name, 0)
        if cfg is None:
            fmt = FORMATS[model.format]
            cfg = ModelConfig(name=model.name, platform=fmt.platform, backend=fmt.backend)
            if (
                model.format in ("pytorch", "onnx")
                and versions
                and (self.repository / model.name / str(max(versions)) / "model.py").is_file()
            ):
                cfg.platform, cfg.backend = "", "python"
        cfg.name = model.name
        if not self._text_front(model, versions):  # a text front's batching is its engine entry's
            _apply_io(cfg, model)
        if model.instanceGroups:
            from modeldeploy_runtime.config import InstanceGroup

            cfg.instance_groups = [InstanceGroup(g.count, g.kind) for g in model.instanceGroups]
        cfg.version_policy = VersionPolicy.specific(versions)
        newest = self.repository / model.name / str(max(versions)) if versions else None
        if model.format == "tensorrtllm" and newest is not None and not has_text_front(newest):
            cfg.parameters["gpt_model_path"] = str((newest / ENGINE_DIR).absolute())  # token-only engine
        return cfg

    def write_config(self, model: ManifestModel, versions: list[int]) -> bool:
        """Write config.pbtxt (and vLLM's model.json of each version); returns whether one changed."""
        d = self.repository / model.name
        d.mkdir(parents=True, exist_ok=True)
        engines = False
        if model.format == "vllm":  # model.json of each version, from the manifest's engine settings
            engines = any([write_engine_args(d / str(v), model.llm) for v in versions])
        if self._text_front(model, versions):  # <name>-engine: the newest version's prebuilt engine
            newest = d / str(max(versions))
            engines = write_engine_entry(self.repository, model.name, newest, model.maxBatchSize)
        text = self.model_config(model, versions).render()
        path = d / CONFIG_FILE
        if path.is_file() and path.read_text() == text:
            return engines
        tmp = d / f".{CONFIG_FILE}.tmp"
        tmp.write_text(text)
        tmp.replace(path)
        return True

    def _text_front(self, model: ManifestModel, versions: list[int]) -> bool:
        """A tensorrtllm model packaged with its text front (it needs its ``<name>-engine``)."""
        return (
            model.format == "tensorrtllm"
            and bool(versions)
            and has_text_front(self.repository / model.name / str(max(versions)))
        )

    def _load_engine(self, model: ManifestModel, versions: list[int]) -> str | None:
        """Load (or reload, when its config changed) the engine entry behind a text front before
        the front itself; returns Triton's error."""
        if not self._text_front(model, versions):
            return None
        err = self.triton.load(engine_model_name(model.name))
        if not err:
            return None
        msg = f"{engine_model_name(model.name)}: {_short(err)}"
        self._error(f"{model.name}: its engine failed to load: {msg}")
        return msg

    # --------------------------------------------------------------------------------------- fetch
    def _note_in_place(self, key: tuple[str, int]) -> None:
        """A version found in the repository (fetched by the init container, or before a restart):
        its origin is how it first got there, from its source record."""
        with self.lock:
            if key in self.origins:
                return
        rec = self.fetcher.read_record(self.repository / key[0] / str(key[1])) or {}
        first = rec.get("fetch")
        with self.lock:
            self.origins[key] = first if isinstance(first, dict) else {"origin": "repository"}

    def fetch_wanted(self, model: ManifestModel, force: bool = False) -> list[int]:
        """Fetch the wanted versions; returns those present and verified."""
        ok: list[int] = []
        by_num = {v.version: v for v in model.versions}
        artifact = FORMATS[model.format].artifact
        for num in model.wanted_versions():
            mv = by_num[num]
            key = (model.name, num)
            if self._failed_loads.get(key) == self._key(model, num):
                continue  # Triton rejected exactly this source/digest: retried when the manifest changes it
            if self.fetcher.is_current(model.name, num, mv.source, mv.sha256):
                try:
                    self.provenance.verify_present(
                        model, num, self._key(model, num), self.repository / model.name / str(num)
                    )
                except SignatureError as exc:
                    self._set(model.name, num, "Failed", exc.reason, str(exc))
                    self.fetcher.remove_version(model.name, num)
                    continue
                self._note_in_place(key)
                ok.append(num)
                continue
            nxt = self._fetch_retry.get(key)
            if nxt and not force and time.monotonic() < nxt[0]:
                continue
            cur = self.states.get(model.name, {}).get(num)
            if cur is None or cur.state != "Failed":
                self._set(model.name, num, "Pending", "Fetching", f"fetching {mv.source}")
            try:
                res = self.fetcher.fetch(
                    model.name, num, mv.source, mv.sha256, model.credentials, filename=artifact,
                    check=self.provenance.check(model, num, self._key(model, num)),
                )  # fmt: skip
            except (FetchError, SignatureError) as exc:
                delay = min((nxt[1] * 2) if nxt else FETCH_RETRY_BASE, FETCH_RETRY_MAX)
                self._fetch_retry[key] = (time.monotonic() + delay, delay)
                self._set(model.name, num, "Failed", exc.reason, str(exc))
                continue
            except Exception as exc:  # unexpected: keep the agent alive, report it
                delay = min((nxt[1] * 2) if nxt else FETCH_RETRY_BASE, FETCH_RETRY_MAX)
                self._fetch_retry[key] = (time.monotonic() + delay, delay)
                self._set(
                    model.name, num, "Failed", "FetchFailed", f"{mv.source}: {exc.__class__.__name__}: {exc}"
                )
                continue
            self._fetch_retry.pop(key, None)
            self.provenance.set_digest(model.name, num, res.digest)
            with self.lock:
                # found in place (the init container fetched it): report how it first got there
                self.origins[key] = res.first_fetch or {
                    "origin": res.origin,
                    "bytes": res.bytes,
                    "seconds": round(res.seconds, 3),
                }
            log.info(
                "fetched %s version %d from %s (%s, %d bytes, %.2fs)",
                model.name, num, mv.source, res.origin, res.bytes, res.seconds,
            )  # fmt: skip
            ok.append(num)
        return ok

    # ---------------------------------------------------------------------------------------- init
    def fill_repository(self, manifest: ModelManifest) -> bool:
        """Init mode: fetch all wanted versions and write configs. True when all succeeded."""
        all_ok = True
        for model in manifest.models:
            ok = self.fetch_wanted(model, force=True)
            if set(ok) != set(model.wanted_versions()):
                all_ok = False
            if ok:
                self.write_config(model, ok)
                for v in ok:
                    self._set(model.name, v, "Pending", "Fetched", "in the repository, not loaded yet")
        self.fetcher.cleanup_tmp()
        return all_ok

    # ---------------------------------------------------------------------------------------- sync
    def _key(self, model: ManifestModel, num: int) -> str:
        mv = next(v for v in model.versions if v.version == num)
        return f"{mv.source}@{mv.sha256 or ''}"

    def sync_model(self, model: ManifestModel) -> None:
        """Make Triton serve the wanted versions of one model, without a gap.

        One ``load`` with ``version_policy specific`` = the wanted versions that are fetched (and did
        not fail to load before). Verified on the real server: while it loads, Triton keeps serving
        the versions it had; once the new ones are READY it drops the ones no longer listed; when a
        version fails to load, the whole reload is discarded and the previous versions keep
        serving. Every load reloads all listed versions of the model (Triton reloads a modified
        model as a whole), so one load per switch is the cheapest: the two-step variant (load
        old+new, then new only) costs three version loads instead of one.
        """
        name = model.name
        wanted = model.wanted_versions()
        fetched = self.fetch_wanted(model)
        try:
            triton = self.triton.model_states(name)
        except requests.RequestException as exc:
            self._error(f"cannot reach Triton at {self.triton.url}: {exc}")
            return
        serving = sorted(v for v, (st, _) in triton.items() if st == "READY")
        candidates = [v for v in fetched if self._failed_loads.get((name, v)) != self._key(model, v)]
        desired = candidates or serving  # nothing new to load: keep what is served
        if not desired:
            return
        t0 = time.monotonic()
        changed = self.write_config(model, desired)
        new = [v for v in desired if v not in serving]
        gone = [v for v in serving if v not in desired]
        if changed or new or gone:
            for v in new:
                self._set(name, v, "Loading", "Loading", "loading into Triton")
            err = self._load_engine(model, desired) or self.triton.load(name)
            try:
                triton = self.triton.model_states(name)
            except requests.RequestException as exc:
                self._error(f"cannot reach Triton at {self.triton.url}: {exc}")
                return
            now = sorted(v for v, (st, _) in triton.items() if st == "READY")
            for v in desired:
                if v not in now:
                    st, reason = triton.get(v, ("UNAVAILABLE", ""))
                    self._failed_loads[(name, v)] = self._key(model, v)
                    self._set(
                        name, v, "Failed", "LoadFailed", _short(reason or err or f"version {v} is {st}")
                    )
            if err and now and set(now) != set(desired):
                self.write_config(model, now)  # the file says what is really served (no reload)
            gone = [v for v in serving if v not in now]
            self.switch_log.append(
                {"model": name, "loaded": [v for v in new if v in now], "unloaded": gone,
                 "failed": [v for v in desired if v not in now], "seconds": time.monotonic() - t0, "at": time.time()}
            )  # fmt: skip
            serving = now
        for v in wanted:
            if v in serving:
                self._set(name, v, "Ready")
        with self.lock:
            st_map = self.states.setdefault(name, {})
            for v in list(st_map):
                if v not in wanted and v not in serving:
                    if st_map[v].state in ("Ready", "Loading"):
                        st_map[v] = VersionStatus(
                            v, "Unloaded", "NotWanted", "unloaded: no longer in the manifest"
                        )
                    elif st_map[v].state != "Unloaded":
                        del st_map[v]
        # remove folders of versions neither wanted nor served (keeps the emptyDir small; a failed
        # version's folder goes too, Triton must not retry it on the next reload)
        mdir = self.repository / name
        if mdir.is_dir() and serving:
            for d in mdir.iterdir():
                if d.is_dir() and d.name.isdigit():
                    v = int(d.name)
                    if v not in serving and (v not in wanted or (name, v) in self._failed_loads):
                        self.fetcher.remove_version(name, v)

    def _sync_one(self, model: ManifestModel) -> None:
        try:
            self.sync_model(model)
        except Exception as exc:  # never let one model stop the others
            log.exception("sync of %s failed", model.name)
            self._error(f"{model.name}: sync failed: {exc.__class__.__name__}: {exc}")

    def remove_model(self, name: str) -> None:
        import shutil

        err = self.triton.unload(name)
        if err:
            self._error(f"{name}: unload failed: {_short(err)}")
        with self.lock:
            self.states.pop(name, None)
        d = self.repository / name
        if d.is_dir() and not name.startswith("."):
            shutil.rmtree(d, ignore_errors=True)
        engine = self.repository / engine_model_name(name)  # a tensorrtllm text front's engine entry
        if engine.is_dir() and not name.startswith("."):
            self.triton.unload(engine.name)
            shutil.rmtree(engine, ignore_errors=True)

    def sync(self, manifest: ModelManifest, manifest_hash: str | None = None) -> None:
        with self.lock:
            previous = self.manifest
            self.manifest = manifest
            if manifest_hash is not None:
                if manifest_hash != self.manifest_hash:
                    self._fetch_retry.clear()
                self.manifest_hash = manifest_hash
        names = {m.name for m in manifest.models}
        if previous is not None:
            for old in previous.models:
                if old.name not in names:
                    self.remove_model(old.name)
        models = list(manifest.models)
        if len(models) > 1:
            with ThreadPoolExecutor(
                min(len(models), PARALLEL_MODEL_SYNCS), thread_name_prefix="sync"
            ) as pool:
                list(pool.map(self._sync_one, models))
        else:
            for model in models:
                self._sync_one(model)
        with self.lock:
            self.applied_hash = manifest_hash
            self.applied_generation = manifest.generation
            healthy = all(
                self.states.get(m.name, {}).get(v, VersionStatus(v)).state == "Ready"
                for m in manifest.models
                for v in m.wanted_versions()
            )
            if healthy:
                self.last_error = None  # recovered: an old error would only mislead

    # -------------------------------------------------------------------------------------- status
    def ready(self) -> tuple[bool, list[str]]:
        """Every version the manifest expects is READY in Triton (asked now)."""
        with self.lock:
            manifest = self.manifest
            current = self.applied_hash == self.manifest_hash and manifest is not None
        if manifest is None:
            return False, ["no manifest loaded yet"]
        missing = []
        for m in manifest.models:
            for v in m.wanted_versions():
                if not self.triton.version_ready(m.name, v):
                    missing.append(f"{m.name}/{v}")
            engine = self._engine_entry(m)
            if engine and not self.triton.version_ready(engine, 1):
                missing.append(f"{engine}/1")
        if not current:
            missing.append("manifest change not applied yet")
        return not missing, missing

    def failed(self) -> list[dict[str, Any]]:
        """Wanted versions whose fetch or load failed, with the reason (no secrets: fetch and load
        errors name the source and the cause only), for the ``/ready`` body (read by humans; the
        operator reads the typed ``/status``)."""
        with self.lock:
            manifest = self.manifest
            states = {m: dict(vs) for m, vs in self.states.items()}
        if manifest is None:
            return []
        out = []
        for m in manifest.models:
            for v in m.wanted_versions():
                st = states.get(m.name, {}).get(v)
                if st is not None and st.state == "Failed":
                    out.append({"model": m.name, "version": v, "reason": st.reason, "message": st.message})
        return out

    def serving(self) -> tuple[bool, list[str]]:
        """Every model has at least one READY version (old or new)."""
        with self.lock:
            manifest = self.manifest
        if manifest is None:
            return False, ["no manifest loaded yet"]
        try:
            index = self.triton.index()
        except requests.RequestException as exc:
            return False, [f"triton unreachable: {exc.__class__.__name__}"]
        ready = {e.get("name") for e in index if e.get("state") == "READY"}
        missing = [m.name for m in manifest.models if m.name not in ready]
        missing += [e for e in map(self._engine_entry, manifest.models) if e and e not in ready]
        return not missing, missing

    def _engine_entry(self, model: ManifestModel) -> str | None:
        """The engine entry a tensorrtllm text front needs to serve (None for other models)."""
        name = engine_model_name(model.name)
        on_disk = (self.repository / name / CONFIG_FILE).is_file()
        return name if model.format == "tensorrtllm" and on_disk else None

    def _served(self) -> dict[str, list[int]] | None:
        """model -> versions Triton reports READY now, or None when Triton cannot be asked."""
        try:
            index = self.triton.index()
        except requests.RequestException:
            return None
        out: dict[str, list[int]] = {}
        for e in index:
            if e.get("state") == "READY" and str(e.get("version", "")).isdigit():
                out.setdefault(str(e.get("name")), []).append(int(e["version"]))
        return {k: sorted(v) for k, v in out.items()}

    def status(self) -> AgentStatus:
        """The typed report the operator reads (one Triton index call, no per-version requests)."""
        served = self._served()
        with self.lock:
            manifest = self.manifest
            current = manifest is not None and self.applied_hash == self.manifest_hash
            models: list[ModelReport] = []
            all_wanted_served = True
            for m in manifest.models if manifest else []:
                st = self.states.get(m.name, {})
                wanted = m.wanted_versions()
                now = (served or {}).get(m.name, [])
                all_wanted_served = all_wanted_served and set(wanted) <= set(now)
                versions = [
                    (st.get(v) or VersionStatus(v))
                    .report()
                    .model_copy(update={**self.provenance.of(m.name, v), "fetch": self._origin(m.name, v)})
                    for v in sorted(set(wanted) | set(st))
                ]
                models.append(ModelReport(name=m.name, versions=versions, served=now))
            return AgentStatus(
                ready=current and served is not None and all_wanted_served,
                serving=manifest is not None and served is not None and all(m.served for m in models),
                generation=manifest.generation if manifest else 0,
                appliedGeneration=self.applied_generation,
                manifestSource=self.manifest_source,
                models=models,
                lastError=self.last_error,
                cache=CacheReport.model_validate(self.fetcher.cache.status()) if self.fetcher.cache else None,
            )

    def _origin(self, name: str, version: int) -> FetchReport | None:
        """How the version got into the repository ("cache", "download", "repository", "localCopy")."""
        o = self.origins.get((name, version))
        return FetchReport.model_validate(o) if o else None

    # ------------------------------------------------------------------------------------- push
    def known_generation(self) -> int:
        with self.lock:
            gens = [self.manifest.generation if self.manifest else 0]
            if self._pushed is not None:
                gens.append(self._pushed[0].generation)
            return max(gens)

    def check_push(self, body: bytes, signature: str | None) -> tuple[int, str]:
        """(HTTP status, why) for a push: (0, "") when ``signature`` (:data:`SIGNATURE_HEADER`)
        signs ``body`` for this agent's owner with the operator's mounted public key; 401 without a
        signature; 403 with a wrong one, or when this agent has no owner or no readable key
        (pushing is off: only the mounted file counts)."""
        if not signature:
            return 401, "signature required"
        key = read_public_key(self.push_key_path)
        if self.push_owner is None or key is None:
            return 403, "pushing is not configured on this agent"
        if not verify(key, self.push_owner, body, signature):
            return 403, "bad signature"
        return 0, ""

    def accept_push(self, push: ManifestPush) -> tuple[int, PushReply]:
        """Take a manifest from the operator unless it is older than the one the agent has (409).
        The same generation again is accepted without change (the operator may push twice)."""
        m = push.manifest
        with self.lock:
            have = self.known_generation()
            if m.generation < have:
                return 409, PushReply(
                    accepted=False, generation=have, message=f"generation {m.generation} is older than {have}"
                )
            if m.generation == have and self.manifest is not None:
                return 200, PushReply(accepted=True, generation=have, message="already at this generation")
            self._pushed = (m, hashlib.sha256(m.to_json().encode()).hexdigest())
        log.info("manifest generation %d pushed by the operator", m.generation)
        self._wake.set()
        return 200, PushReply(accepted=True, generation=m.generation, message="accepted")

    def _newest(
        self, from_file: tuple[ModelManifest, str] | None
    ) -> tuple[ModelManifest, str, Literal["file", "push"]] | None:
        """The manifest to work on: the pushed one while its generation is higher than the file's."""
        with self.lock:
            pushed = self._pushed
            if (
                pushed is not None
                and from_file is not None
                and from_file[0].generation >= pushed[0].generation
            ):
                self._pushed = pushed = None  # the kubelet caught up: the file is the truth again
        if pushed is not None:
            return pushed[0], pushed[1], "push"
        if from_file is not None:
            return from_file[0], from_file[1], "file"
        return None

    # ----------------------------------------------------------------------------------- run loops
    def run_init(self) -> int:
        manifest, digest = self.read_manifest()
        self.manifest, self.manifest_hash = manifest, digest
        ok = self.fill_repository(manifest)
        if not ok:
            msg = self.last_error or "some versions could not be fetched"
            with contextlib.suppress(OSError):
                Path("/dev/termination-log").write_text(msg[:4000])
            log.error("init failed: %s", msg)
            return 1
        log.info("repository ready for generation %d", manifest.generation)
        return 0

    def wait_for_triton(self, stop: threading.Event, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set():
            if self.triton.live():
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            stop.wait(0.5)
        return False

    def run_sidecar(self, stop: threading.Event) -> None:
        self.wait_for_triton(stop)
        last_sync = 0.0
        while not stop.is_set():
            from_file: tuple[ModelManifest, str] | None = None
            try:
                from_file = self.read_manifest()
            except (OSError, ValueError) as exc:
                self._error(str(exc))
            picked = self._newest(from_file)
            if picked is not None:
                manifest, digest, source = picked
                due = time.monotonic() - last_sync >= self.resync_interval
                if digest != self.applied_hash or due:
                    if digest != self.applied_hash:
                        log.info(
                            "manifest generation %d (%s, from %s)", manifest.generation, digest[:12], source
                        )
                    self.manifest_source = source
                    self.sync(manifest, digest)
                    last_sync = time.monotonic()
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    # ------------------------------------------------------------------------------------- http
    def make_server(self, host: str = "0.0.0.0", port: int = 8080) -> ThreadingHTTPServer:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = (json.dumps(body) + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    log.debug("http: client went away before the reply to %s", self.path)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/healthz":
                    self._send(200, {"alive": True})
                elif path == READY_PATH:
                    ok, missing = agent.ready()
                    body: dict[str, Any] = {"ready": ok, "waitingFor": missing}
                    if not ok:
                        body["failed"] = agent.failed()
                    self._send(200 if ok else 503, body)
                elif path == SERVING_PATH:
                    ok, missing = agent.serving()
                    self._send(200 if ok else 503, {"serving": ok, "waitingFor": missing})
                elif path == STATUS_PATH:
                    self._send(200, agent.status().model_dump(mode="json"))
                else:
                    self._send(404, {"error": f"no such endpoint {path}"})

            def do_PUT(self) -> None:
                if self.path.split("?")[0] != MANIFEST_PATH:
                    self._send(404, {"error": f"no such endpoint {self.path}"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if 0 < length <= MAX_PUSH_BYTES else b""
                denied, why = agent.check_push(data, self.headers.get(SIGNATURE_HEADER))
                if denied:
                    self._send(
                        denied,
                        PushReply(
                            accepted=False, generation=agent.known_generation(), message=why
                        ).model_dump(),
                    )
                    return
                try:
                    push = ManifestPush.model_validate_json(data)
                except ValueError as exc:
                    reply = PushReply(
                        accepted=False,
                        generation=agent.known_generation(),
                        message=f"invalid push: {exc}"[:2000],
                    )
                    self._send(400, reply.model_dump())
                    return
                code, reply = agent.accept_push(push)
                self._send(code, reply.model_dump())

        srv = ThreadingHTTPServer((host, port), Handler)
        srv.daemon_threads = True
        return srv

    def serve_in_thread(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> tuple[ThreadingHTTPServer, threading.Thread]:
        srv = self.make_server(host, port)
        th = threading.Thread(target=srv.serve_forever, name="agent-http", daemon=True)
        th.start()
        return srv, th


def tmp_dir_name() -> str:
    return TMP_DIR
