"""The agent's signature checks and per-version provenance (digest, signer) — see signing.py.

:class:`Provenance` turns a model's manifest ``verification`` into a :class:`VerifyPolicy`, gives the
fetcher a ``check`` that verifies the staged folder before it is published, verifies versions
already in the repository once per agent process (the init container verified them too, but the
sidecar trusts nothing it did not check itself), and remembers what it verified for ``/status``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldeploy_runtime.digest import version_digest
from modeldeploy_runtime.manifest import ManifestModel
from modeldeploy_runtime.signing import SignatureError, VerifyPolicy, verify_folder


def policy_of(model: ManifestModel) -> VerifyPolicy | None:
    v = model.verification
    if v is None:
        return None
    return VerifyPolicy(
        public_key=Path(v.publicKeyPath) if v.publicKeyPath else None,
        certificate_chain=tuple(Path(p) for p in v.certificateChainPaths),
        identity=v.identity,
        required=v.required,
    )


class Provenance:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (model, version) -> (fetch key, {"digest": ..., "signer": ...})
        self._seen: dict[tuple[str, int], tuple[str, dict[str, str]]] = {}

    def check(self, model: ManifestModel, num: int, key: str) -> Callable[[Path], object]:
        """A ``check`` for Fetcher.fetch: raises SignatureError, records the signer on success."""
        policy = policy_of(model)

        def run(folder: Path) -> None:
            self._verify(model.name, num, key, folder, policy)

        return run

    def _verify(self, name: str, num: int, key: str, folder: Path, policy: VerifyPolicy | None) -> None:
        info: dict[str, str] = {}
        if policy is not None:
            res = verify_folder(folder, policy)
            if res is not None:
                info["signer"] = res.signer
        digest = version_digest(folder)
        if digest:
            info["digest"] = "sha256:" + digest
        with self._lock:
            self._seen[(name, num)] = (key, info)

    def verify_present(self, model: ManifestModel, num: int, key: str, folder: Path) -> None:
        """A version already in the repository (fetched earlier): verified once per key."""
        with self._lock:
            seen = self._seen.get((model.name, num))
        if seen is not None and seen[0] == key:
            return
        self._verify(model.name, num, key, folder, policy_of(model))

    def set_digest(self, name: str, num: int, digest: str | None) -> None:
        if not digest:
            return
        with self._lock:
            seen = self._seen.get((name, num))
            if seen is not None:
                seen[1].setdefault("digest", "sha256:" + digest.removeprefix("sha256:"))

    def forget(self, name: str, num: int) -> None:
        with self._lock:
            self._seen.pop((name, num), None)

    def of(self, name: str, num: int) -> dict[str, Any]:
        with self._lock:
            seen = self._seen.get((name, num))
        return dict(seen[1]) if seen else {}


__all__ = ["Provenance", "SignatureError", "policy_of"]
