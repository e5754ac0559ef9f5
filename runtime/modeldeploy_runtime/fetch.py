"""Fetch model versions into a pod's model repository, safely.

Sources (``ManifestVersion.source``):

* ``file:///abs/path`` (or a plain absolute path) and ``pvc://<claim>/<path>`` (the claim mounted
  at ``$MODELDEPLOY_PVC_ROOT/<claim>``, default ``/mnt/pvc/<claim>``),
* ``s3://bucket/key`` (AWS or any S3-compatible store: endpoint from the manifest's credentials,
  ``<prefix>AWS_ENDPOINT_URL`` or the default chain; keys from ``<prefix>AWS_ACCESS_KEY_ID`` /
  ``<prefix>AWS_SECRET_ACCESS_KEY`` env vars or same-named files in a mounted Secret),
* ``https://`` / ``http://`` (single file, resumed with Range requests and retried).

Large objects (S3/GCS/HTTP, at least two parts of ``part_size``) are fetched with parallel ranged
requests, resumable across broken connections and across calls (see ``transfer.py``: partial files
live in ``<repository>/.modeldeploy-tmp/partial/`` until complete); a server that answers a ranged
request with the whole object is read as one stream instead. The files of a folder source (sharded
models) are fetched concurrently, at most ``file_workers`` at a time.

A source is a version *folder* (e.g. what ``mdctl package`` wrote, with its ``manifest.sha256``) or a
single file; archives (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``) are unpacked into the version.

Every fetch is written to ``<repository>/.modeldeploy-tmp/`` and checked (sha256 of the file, or of
``manifest.sha256`` and then every file it lists) before it is renamed to ``<model>/<version>``:
Triton never sees a partial version and a failed fetch changes nothing. A version whose record
(``.modeldeploy-source.json``) matches source and digest is not fetched again; a digest already
present elsewhere in the repository is copied locally (hard links) instead of downloaded.
Credentials never appear in errors or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from modeldeploy_runtime.cache import SharedCache
from modeldeploy_runtime.digest import (
    SHA_MANIFEST,
    SOURCE_RECORD,
    DigestMismatch,
    copy_hashing,
    sha256_file,
    verify_folder,
)
from modeldeploy_runtime.manifest import ManifestCredentials
from modeldeploy_runtime.transfer import (
    ObjectChanged,
    RangeNotSupported,
    TransferSettings,
    ranged_download,
)

log = logging.getLogger("modeldeploy.runtime.fetch")
TMP_DIR = ".modeldeploy-tmp"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DEFAULT_PVC_ROOT = "/mnt/pvc"
PARTIAL_DIR = "partial"
#: Partial downloads older than this are dropped by ``cleanup_tmp`` (their source moved on).
PARTIAL_MAX_AGE_S = 24 * 3600
DEFAULT_FILE_WORKERS = 4


#: Google Cloud Storage's S3-interoperable endpoint, used for gs:// unless an endpoint is given.
GCS_XML_ENDPOINT = "https://storage.googleapis.com"


class FetchError(RuntimeError):
    """A version could not be fetched; ``reason`` is a short CamelCase code for status."""

    def __init__(self, message: str, reason: str = "FetchFailed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FetchResult:
    version_dir: Path
    digest: str | None
    cached: bool
    bytes: int
    seconds: float
    source: str
    #: where the files came from: "repository" (already there), "localCopy" (same digest in this
    #: repository), "cache" (the shared cache), "download" (the source)
    origin: str = "download"
    #: "repository": how the version first got there ({origin, bytes, seconds} from its source
    #: record), e.g. the init container's download that the sidecar then finds in place
    first_fetch: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------- credentials
class Credentials:
    """Looks up storage settings by name: ``<envPrefix><KEY>`` env vars, then ``<mountPath>/<KEY>``."""

    def __init__(
        self, spec: ManifestCredentials | None = None, environ: dict[str, str] | None = None
    ) -> None:
        self.spec = spec or ManifestCredentials()
        self.environ = os.environ if environ is None else environ

    def get(self, key: str) -> str | None:
        prefix = self.spec.envPrefix or ""
        v = self.environ.get(prefix + key)
        if v:
            return v
        if self.spec.mountPath:
            p = Path(self.spec.mountPath) / key
            if p.is_file():
                return p.read_text().strip() or None
        return None

    def s3_client(self, default_endpoint: str | None = None, max_connections: int = 10) -> Any:
        import boto3
        from botocore.config import Config

        endpoint = (
            self.spec.endpoint or self.get("AWS_ENDPOINT_URL") or self.get("S3_ENDPOINT") or default_endpoint
        )
        region = self.spec.region or self.get("AWS_REGION") or self.get("AWS_DEFAULT_REGION") or "us-east-1"
        kwargs: dict[str, Any] = {
            "region_name": region,
            "config": Config(
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=max(10, max_connections),
                s3={"addressing_style": "path"} if endpoint else {},
            ),
        }
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        key, secret = self.get("AWS_ACCESS_KEY_ID"), self.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            kwargs["aws_access_key_id"] = key
            kwargs["aws_secret_access_key"] = secret
            token = self.get("AWS_SESSION_TOKEN")
            if token:
                kwargs["aws_session_token"] = token
        return boto3.session.Session().client("s3", **kwargs)


# ------------------------------------------------------------------------------------------ sources
class _Source:
    """Lists and opens the files of one source."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.transfer = TransferSettings()
        self.partial_dir: Path | None = None

    def partial_path(self, *key: object) -> Path:
        """Where a ranged download of this object keeps its parts (stable across calls)."""
        assert self.partial_dir is not None
        name = hashlib.sha256("\0".join(map(str, (self.uri, *key))).encode()).hexdigest()[:40]
        return self.partial_dir / name

    def _ranged(self, read: Any, size: int, tag: str, dest: Path, label: str) -> tuple[str, int] | None:
        """Ranged parallel download into ``dest``; None when the server refuses ranges."""
        partial = self.partial_path(label, tag, size)
        try:
            res = ranged_download(read, size, tag, partial, self.transfer)
        except RangeNotSupported:
            log.info("fetch %s: the server refuses ranged requests; one stream instead", label)
            _drop_partial(partial)
            return None
        except ObjectChanged as exc:
            _drop_partial(partial)
            raise FetchError(
                f"{self.uri}: {label} changed during the download ({exc})", "ObjectChanged"
            ) from exc
        os.replace(partial, dest)
        log.info(
            "fetch %s: %d bytes, %d received now, %d resumed from an earlier attempt",
            label, res.size, res.transferred, res.resumed,
        )  # fmt: skip
        return res.sha256, res.size

    def is_folder(self) -> bool:
        raise NotImplementedError

    def list(self) -> list[str]:
        """Relative paths of a folder source."""
        raise NotImplementedError

    def download(self, rel: str | None, dest: Path, progress: bool) -> tuple[str, int]:
        """Download one file (``rel`` in a folder, or the file itself when None); (sha256, bytes)."""
        raise NotImplementedError

    def filename(self) -> str:
        return PurePosixPath(urlparse(self.uri).path).name or "artifact"


class _LocalSource(_Source):
    def __init__(self, uri: str, path: Path) -> None:
        super().__init__(uri)
        self.path = path
        if not path.exists():
            raise FetchError(f"{uri}: {path} does not exist", "NotFound")

    def is_folder(self) -> bool:
        return self.path.is_dir()

    def list(self) -> list[str]:
        out = []
        for root, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                rel = Path(root, f).relative_to(self.path).as_posix()
                if rel != SOURCE_RECORD:
                    out.append(rel)
        return out

    def download(self, rel: str | None, dest: Path, progress: bool) -> tuple[str, int]:
        src = self.path / rel if rel else self.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fi, open(dest, "wb") as fo:
            return copy_hashing(fi, fo, src.stat().st_size, f"copy {src.name}", progress)

    def filename(self) -> str:
        return self.path.name


class _S3Source(_Source):
    """s3:// (AWS or any S3-compatible store) and gs:// (Google Cloud Storage through its
    S3-interoperable XML API with HMAC keys given as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""

    def __init__(self, uri: str, creds: Credentials, default_endpoint: str | None = None) -> None:
        super().__init__(uri)
        u = urlparse(uri)
        self.bucket = u.netloc
        self.key = unquote(u.path.lstrip("/"))
        if not self.bucket:
            raise FetchError(f"{uri}: no bucket in {u.scheme}:// URL", "InvalidSource")
        self.creds = creds
        self.default_endpoint = default_endpoint
        self._client: Any = None
        self._files: list[str] | None = None
        self._meta: dict[str, tuple[int, str]] = {}  # key -> (size, etag) from listing/head

    @property
    def client(self) -> Any:
        if self._client is None:
            n = self.transfer.workers * DEFAULT_FILE_WORKERS
            self._client = self.creds.s3_client(self.default_endpoint, n)
        return self._client

    def _err(self, exc: Exception, what: str) -> FetchError:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                return FetchError(f"{self.uri}: {what} not found (s3 {code})", "NotFound")
            if (
                code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403")
                or status == 403
            ):
                return FetchError(
                    f"{self.uri}: access denied ({code}): check the storage credentials of this model",
                    "AccessDenied",
                )
            return FetchError(f"{self.uri}: s3 error {code or status} on {what}", "StorageError")
        if isinstance(exc, BotoCoreError):
            return FetchError(
                f"{self.uri}: cannot reach the S3 endpoint ({exc.__class__.__name__})", "StorageUnreachable"
            )
        return FetchError(f"{self.uri}: {exc}", "StorageError")

    def is_folder(self) -> bool:
        prefix = self.key.rstrip("/") + "/" if self.key else ""
        try:
            files: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix) :]
                    if rel and not rel.endswith("/") and rel != SOURCE_RECORD:
                        files.append(rel)
                        self._meta[obj["Key"]] = (int(obj.get("Size", 0)), str(obj.get("ETag", "")))
        except Exception as exc:
            raise self._err(exc, "listing") from exc
        if files:
            self._files = sorted(files)
            return True
        if not self.key:
            raise FetchError(f"{self.uri}: bucket is empty", "NotFound")
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            raise self._err(exc, "object") from exc
        self._meta[self.key] = (int(head.get("ContentLength", 0)), str(head.get("ETag", "")))
        return False

    def list(self) -> list[str]:
        return list(self._files or [])

    def download(self, rel: str | None, dest: Path, progress: bool) -> tuple[str, int]:
        key = f"{self.key.rstrip('/')}/{rel}" if rel else self.key
        dest.parent.mkdir(parents=True, exist_ok=True)
        size, etag = self._meta.get(key, (None, ""))
        if self.partial_dir is not None and self.transfer.ranged(size):
            assert size is not None
            try:
                done = self._ranged(self._range_reader(key, etag), size, etag, dest, key)
            except FetchError:
                raise
            except Exception as exc:
                raise self._err(exc, f"object {key}") from exc
            if done is not None:
                return done
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            total = int(obj.get("ContentLength") or 0) or None
            with open(dest, "wb") as fo:
                digest, n = copy_hashing(obj["Body"], fo, total, f"s3 {PurePosixPath(key).name}", progress)
        except FetchError:
            raise
        except Exception as exc:
            raise self._err(exc, f"object {key}") from exc
        if total is not None and n != total:
            raise FetchError(f"{self.uri}: {key} truncated ({n} of {total} bytes)", "Truncated")
        return digest, n

    def _range_reader(self, key: str, etag: str) -> Any:
        from botocore.exceptions import ClientError

        def read(start: int, end: int) -> Iterable[bytes]:
            kw = {"IfMatch": etag} if etag else {}
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}", **kw)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("PreconditionFailed", "412"):
                    raise ObjectChanged(f"ETag is no longer {etag}") from exc
                raise
            body = obj["Body"]
            try:
                if not obj.get("ContentRange"):
                    raise RangeNotSupported(f"no Content-Range in the answer to bytes={start}-{end}")
                yield from body.iter_chunks(1 << 20)
            finally:
                body.close()

        return read

    def filename(self) -> str:
        return PurePosixPath(self.key).name or "artifact"


class _HttpSource(_Source):
    def __init__(self, uri: str, retries: int, timeout: float) -> None:
        super().__init__(uri)
        self.retries = retries
        self.timeout = timeout

    def is_folder(self) -> bool:
        return False

    def _probe(self) -> tuple[int, str] | None:
        """(size, tag) when a HEAD request says the server accepts byte ranges; else None (one
        stream, as before). A server that advertises ranges but ignores them is caught later."""
        import requests

        try:
            r = requests.head(self.uri, timeout=self.timeout, allow_redirects=True)
            size = int(r.headers.get("Content-Length", ""))
        except (OSError, ValueError, requests.RequestException):
            return None
        if r.status_code != 200 or r.headers.get("Accept-Ranges", "").lower() != "bytes":
            return None
        return size, r.headers.get("ETag") or r.headers.get("Last-Modified") or ""

    def _range_reader(self, size: int, tag: str) -> Any:
        import requests

        def read(start: int, end: int) -> Iterable[bytes]:
            headers = {"Range": f"bytes={start}-{end}"}
            if tag:
                headers["If-Range"] = tag
            with requests.get(self.uri, headers=headers, stream=True, timeout=self.timeout) as r:
                if r.status_code == 200:
                    raise RangeNotSupported("the server answered a ranged request with the whole object")
                if r.status_code != 206:
                    raise OSError(f"HTTP {r.status_code}")
                if not r.headers.get("Content-Range", "").endswith(f"/{size}"):
                    raise ObjectChanged(f"Content-Range {r.headers.get('Content-Range')!r}, size was {size}")
                yield from r.iter_content(1 << 20)

        return read

    def download(self, rel: str | None, dest: Path, progress: bool) -> tuple[str, int]:
        dest.parent.mkdir(parents=True, exist_ok=True)
        probe = self._probe() if self.partial_dir is not None and self.transfer.workers > 1 else None
        if probe is not None and self.transfer.ranged(probe[0]):
            try:
                done = self._ranged(self._range_reader(*probe), probe[0], probe[1], dest, self.filename())
            except FetchError:
                raise
            except Exception as exc:
                raise FetchError(f"{self.uri}: ranged download failed: {exc}", "DownloadFailed") from exc
            if done is not None:
                return done
        return self._single_stream(dest)

    def _single_stream(self, dest: Path) -> tuple[str, int]:
        import requests

        h = hashlib.sha256()
        done = 0
        total: int | None = None
        attempt = 0
        with open(dest, "wb") as fo:
            while True:
                headers = {"Range": f"bytes={done}-"} if done else {}
                try:
                    with requests.get(self.uri, headers=headers, stream=True, timeout=self.timeout) as r:
                        if r.status_code in (401, 403):
                            raise FetchError(
                                f"{self.uri}: HTTP {r.status_code}: access denied", "AccessDenied"
                            )
                        if r.status_code == 404:
                            raise FetchError(f"{self.uri}: HTTP 404: not found", "NotFound")
                        if done and r.status_code == 200:  # server ignores Range: start over
                            fo.seek(0)
                            fo.truncate()
                            h = hashlib.sha256()
                            done = 0
                        elif r.status_code not in (200, 206):
                            raise OSError(f"HTTP {r.status_code}")
                        if total is None:
                            cl = r.headers.get("Content-Length")
                            total = (int(cl) + done) if cl else None
                        for chunk in r.iter_content(1 << 20):
                            fo.write(chunk)
                            h.update(chunk)
                            done += len(chunk)
                    if total is None or done >= total:
                        break
                    raise OSError(f"connection closed after {done} of {total} bytes")
                except FetchError:
                    raise
                except (OSError, requests.RequestException) as exc:
                    attempt += 1
                    if attempt > self.retries:
                        kind = "Truncated" if total and done < total else "DownloadFailed"
                        raise FetchError(
                            f"{self.uri}: download failed after {attempt} attempts ({done} bytes received): {exc}",
                            kind,
                        ) from exc
                    log.warning(
                        "fetch %s: %s; retrying from byte %d (attempt %d)", self.uri, exc, done, attempt + 1
                    )
                    time.sleep(min(0.2 * 2**attempt, 5.0))
        if total is not None and done != total:
            raise FetchError(f"{self.uri}: truncated ({done} of {total} bytes)", "Truncated")
        return h.hexdigest(), done


# -------------------------------------------------------------------------------------------- fetcher
def _drop_partial(partial: Path) -> None:
    for p in (partial, partial.with_name(partial.name + ".state.json")):
        p.unlink(missing_ok=True)


def _safe_extract(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    p = PurePosixPath(m)
                    if p.is_absolute() or ".." in p.parts:
                        raise FetchError(
                            f"{archive.name}: member {m!r} escapes the version folder", "InvalidArchive"
                        )
                z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                t.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise FetchError(f"{archive.name}: cannot unpack archive: {exc}", "InvalidArchive") from exc
    # an archive holding a single top-level folder (e.g. "1/") is that folder
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        for child in list(inner.iterdir()):
            child.rename(dest / child.name)
        inner.rmdir()


def _link_tree(src: Path, dst: Path) -> None:
    def copy(s: str, d: str) -> Any:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, copy_function=copy)


class Fetcher:
    def __init__(
        self,
        repository: str | Path,
        *,
        pvc_root: str | Path | None = None,
        retries: int = 3,
        timeout: float = 60.0,
        progress: bool = False,
        environ: dict[str, str] | None = None,
        transfer: TransferSettings | None = None,
        file_workers: int = DEFAULT_FILE_WORKERS,
        cache: SharedCache | str | Path | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        read_only = env.get("MODELDEPLOY_CACHE_READONLY", "") in ("1", "true")
        cache = cache if cache is not None else env.get("MODELDEPLOY_CACHE_DIR") or None
        verify = env.get("MODELDEPLOY_CACHE_VERIFY", "stat")
        self.cache = (
            SharedCache(cache, read_only=read_only, verify=verify) if isinstance(cache, str | Path) else cache
        )
        self.repository = Path(repository)
        self.transfer = transfer or TransferSettings(retries=retries)
        self.file_workers = max(1, file_workers)
        self.pvc_root = Path(pvc_root or os.environ.get("MODELDEPLOY_PVC_ROOT", DEFAULT_PVC_ROOT))
        self.retries = retries
        self.timeout = timeout
        self.progress = progress
        self.environ = environ

    # -- helpers
    def _source(self, uri: str, creds: ManifestCredentials | None) -> _Source:
        src = self._make_source(uri, creds)
        src.transfer = self.transfer
        src.partial_dir = self.repository / TMP_DIR / PARTIAL_DIR
        return src

    def _make_source(self, uri: str, creds: ManifestCredentials | None) -> _Source:
        u = urlparse(uri)
        scheme = u.scheme.lower()
        if scheme in ("", "file"):
            path = Path(unquote(u.path) if scheme else uri)
            if not path.is_absolute():
                raise FetchError(f"{uri}: file sources need an absolute path", "InvalidSource")
            return _LocalSource(uri, path)
        if scheme == "pvc":
            rel = unquote(u.path.lstrip("/"))
            if ".." in PurePosixPath(rel).parts:
                raise FetchError(f"{uri}: path escapes the volume", "InvalidSource")
            return _LocalSource(uri, self.pvc_root / u.netloc / rel)
        if scheme == "s3":
            return _S3Source(uri, Credentials(creds, self.environ))
        if scheme == "gs":
            return _S3Source(uri, Credentials(creds, self.environ), default_endpoint=GCS_XML_ENDPOINT)
        if scheme in ("http", "https"):
            return _HttpSource(uri, self.retries, self.timeout)
        raise FetchError(
            f"{uri}: unsupported source scheme {scheme!r} (file, pvc, s3, gs, http, https)", "InvalidSource"
        )

    @staticmethod
    def read_record(version_dir: Path) -> dict[str, Any] | None:
        p = version_dir / SOURCE_RECORD
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def _records(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        if not self.repository.is_dir():
            return
        for model in self.repository.iterdir():
            if not model.is_dir() or model.name.startswith("."):
                continue
            for v in model.iterdir():
                if v.is_dir() and v.name.isdigit():
                    rec = self.read_record(v)
                    if rec:
                        yield v, rec

    def is_current(self, model: str, version: int, source: str, sha256: str | None) -> bool:
        rec = self.read_record(self.repository / model / str(version))
        return bool(rec and rec.get("source") == source and (sha256 is None or rec.get("sha256") == sha256))

    # -- main entry
    def fetch(
        self,
        model: str,
        version: int,
        source: str,
        sha256: str | None = None,
        credentials: ManifestCredentials | None = None,
        filename: str | None = None,
        check: Callable[[Path], object] | None = None,
    ) -> FetchResult:
        """Fetch one version; ``filename`` names a single-file (non-archive) artifact in the
        version folder (e.g. model.onnx), default: the source's basename. ``check`` (e.g. the
        signature verification) runs on the staged folder before it is published; an exception
        from it leaves the repository unchanged."""
        t0 = time.monotonic()
        final = self.repository / model / str(version)
        if self.is_current(model, version, source, sha256):
            rec = self.read_record(final) or {}
            first = rec.get("fetch") if isinstance(rec.get("fetch"), dict) else None
            return FetchResult(
                final, rec.get("sha256"), True, 0, time.monotonic() - t0, source, "repository", first
            )
        tmp_root = self.repository / TMP_DIR
        tmp_root.mkdir(parents=True, exist_ok=True)
        work = tmp_root / f"{model}-{version}-{uuid.uuid4().hex[:8]}"
        staged = work / "version"
        try:
            cached_from = None
            if sha256:
                cached_from = next(
                    (v for v, rec in self._records() if rec.get("sha256") == sha256 and v != final), None
                )
            origin = "localCopy"
            if cached_from is not None:
                _link_tree(cached_from, staged)
                digest: str | None = verify_folder(staged) if (staged / SHA_MANIFEST).is_file() else sha256
                nbytes = 0
                cached = True
            elif sha256 and self.cache is not None:
                digest, nbytes, origin = self._through_cache(
                    self.cache, sha256, source, credentials, work, staged, filename
                )
                cached = origin == "cache"
            else:
                digest, nbytes = self._download(source, sha256, credentials, work, staged, filename)
                cached, origin = False, "download"
            record = {
                "source": source,
                "sha256": digest,
                "fetchedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                # how it got here, for whoever finds it in place later (the sidecar after init)
                "fetch": {"origin": origin, "bytes": nbytes, "seconds": round(time.monotonic() - t0, 3)},
            }
            if check is not None:
                check(staged)
            (staged / SOURCE_RECORD).write_text(json.dumps(record, sort_keys=True) + "\n")
            staged.chmod(0o755)
            self._install(staged, final)
            return FetchResult(final, digest, cached, nbytes, time.monotonic() - t0, source, origin)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _through_cache(
        self,
        cache: SharedCache,
        sha256: str,
        source: str,
        creds: ManifestCredentials | None,
        work: Path,
        staged: Path,
        filename: str | None,
    ) -> tuple[str | None, int, str]:
        """The version from the shared cache, else downloaded (and published when the cache is
        writable: fillers of one digest take turns, so it is downloaded once)."""
        with cache.filling(sha256) as may_publish:
            corrupt_before = cache.entry(sha256).is_dir()
            found = cache.lookup(sha256)
            if found is not None and self._materialized(cache, sha256, staged):
                cache.touch(sha256)
                cache.record(sha256, "Hit", f"{source}: served from the cache")
                return sha256, 0, "cache"
            digest, nbytes = self._download(source, sha256, creds, work, staged, filename)
            if corrupt_before and found is None:
                cache.record(
                    sha256, "CorruptEntryRefetched", f"{source}: corrupt cache entry downloaded again"
                )
            if may_publish:
                cache.publish(sha256, staged)
            return digest, nbytes, "download"

    @staticmethod
    def _materialized(cache: SharedCache, sha256: str, staged: Path) -> bool:
        """Link the entry's files into ``staged``; False (and ``staged`` cleared) when the entry
        went away meanwhile (evicted from under a read-only reader that held no lock): download."""
        try:
            cache.materialize(sha256, staged)
            return True
        except OSError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            cache.record(sha256, "Miss", f"cache entry vanished while linking it: {exc}")
            return False

    def _download(
        self,
        source: str,
        sha256: str | None,
        creds: ManifestCredentials | None,
        work: Path,
        staged: Path,
        filename: str | None = None,
    ) -> tuple[str | None, int]:
        src = self._source(source, creds)
        try:
            folder = src.is_folder()
        except FetchError:
            raise
        except OSError as exc:
            raise FetchError(f"{source}: {exc}", "FetchFailed") from exc
        nbytes = 0
        if folder:
            files = src.list()
            if not files:
                raise FetchError(f"{source}: the folder is empty", "NotFound")
            if sha256 and SHA_MANIFEST not in files:
                raise FetchError(
                    f"{source}: a sha256 is pinned but the folder has no {SHA_MANIFEST} to check it against",
                    "DigestMismatch",
                )
            for rel in files:
                p = PurePosixPath(rel)
                if p.is_absolute() or ".." in p.parts:
                    raise FetchError(f"{source}: file {rel!r} escapes the version folder", "InvalidSource")
            known, nbytes = self._download_files(src, files, staged)
            digest: str | None = None
            if (staged / SHA_MANIFEST).is_file():
                try:
                    digest = verify_folder(staged, sha256, known)
                except DigestMismatch as exc:
                    raise FetchError(
                        f"{source}: {exc}".replace(str(staged) + "/", ""), "DigestMismatch"
                    ) from exc
            return digest, nbytes
        name = src.filename()
        raw = work / "download" / name
        got, nbytes = src.download(None, raw, self.progress)
        if sha256 and got != sha256:
            raise FetchError(
                f"{source}: sha256 {got} ({nbytes} bytes) does not match the expected {sha256}",
                "DigestMismatch",
            )
        if name.lower().endswith(ARCHIVE_SUFFIXES):
            _safe_extract(raw, staged)
            if (staged / SHA_MANIFEST).is_file():
                try:
                    verify_folder(staged)
                except DigestMismatch as exc:
                    raise FetchError(
                        f"{source}: {exc}".replace(str(staged) + "/", ""), "DigestMismatch"
                    ) from exc
        else:
            staged.mkdir(parents=True, exist_ok=True)
            raw.rename(staged / (filename or name))
        return got, nbytes

    def _download_files(self, src: _Source, files: list[str], staged: Path) -> tuple[dict[str, str], int]:
        """The files of a folder source, ``file_workers`` at a time; (digest per file, bytes)."""
        with ThreadPoolExecutor(max_workers=self.file_workers, thread_name_prefix="file") as pool:
            results = list(pool.map(lambda rel: src.download(rel, staged / rel, self.progress), files))
        known = {rel: got for rel, (got, _) in zip(files, results, strict=True)}
        return known, sum(n for _, n in results)

    def _install(self, staged: Path, final: Path) -> None:
        """Rename the staged version into place (replacing an older copy atomically enough: the
        old folder is renamed away first, then the new one in, both renames on one filesystem)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        trash = None
        if final.exists():
            trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:6]}"
            final.rename(trash)
        try:
            staged.rename(final)
        except OSError:
            if trash is not None:
                trash.rename(final)
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def remove_version(self, model: str, version: int) -> None:
        d = self.repository / model / str(version)
        if d.exists():
            trash = d.parent / f".{d.name}.del-{uuid.uuid4().hex[:6]}"
            d.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    def cleanup_tmp(self) -> None:
        """Remove staging leftovers; partial downloads stay for a resume unless they are old."""
        tmp = self.repository / TMP_DIR
        with contextlib.suppress(FileNotFoundError):
            for p in tmp.iterdir():
                if p.name != PARTIAL_DIR:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            for p in (tmp / PARTIAL_DIR).iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - p.stat().st_mtime > PARTIAL_MAX_AGE_S:
                        p.unlink()


def sha256_of(path: Path) -> str:
    return sha256_file(path)
