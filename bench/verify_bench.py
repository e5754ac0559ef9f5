"""Signature verification cost (issue #15): OpenSSF model signature vs the sha256 pass.

    python bench/verify_bench.py [--size-mb 1024] [--repeat 3] [--json out.json]

Writes one version folder with a ``--size-mb`` weights file (random bytes), its manifest.sha256 and a
signature (EC P-256 key), then times, best of ``--repeat`` (page cache warm: the agent verifies
right after the download wrote the files):
* the sha256 pass the fetcher already does (digest.verify_folder: every file against
  manifest.sha256),
* the signature verification the agent adds (signing.verify_folder: model-signing re-hashes every
  file and checks the signed statement),
and prints seconds, MB/s and the ratio of the two. Signing time is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / p) for p in ("runtime", "operator")]


def _write_weights(path: Path, size_mb: int) -> None:
    chunk = os.urandom(1 << 20)
    with path.open("wb") as f:
        for i in range(size_mb):
            f.write(chunk[i % 251 :] + chunk[: i % 251])  # distinct MiB blocks, cheap to make


def _key(path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    priv, pub = path / "k.pem", path / "k.pub"
    priv.write_bytes(k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    from modeldeploy_runtime.digest import verify_folder as sha_verify
    from modeldeploy_runtime.digest import write_sha_manifest
    from modeldeploy_runtime.signing import VerifyPolicy, sign_folder, verify_folder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="verify-bench-"))
    try:
        folder = work / "m" / "1"
        folder.mkdir(parents=True)
        _write_weights(folder / "model.bin", args.size_mb)
        (folder / "config.json").write_text('{"layers": 12}\n')
        write_sha_manifest(folder)
        priv, pub = _key(work)
        t0 = time.perf_counter()
        sign_folder(folder, priv)
        sign_s = time.perf_counter() - t0
        policy = VerifyPolicy(public_key=pub)
        sha_s = _best(lambda: sha_verify(folder), args.repeat)
        sig_s = _best(lambda: verify_folder(folder, policy), args.repeat)
        size = args.size_mb
        figures = {
            "size_mb": size,
            "sign_s": round(sign_s, 6),
            "sha256_pass_s": round(sha_s, 6),
            "signature_verify_s": round(sig_s, 6),
            "sha256_mb_s": round(size / sha_s, 1),
            "signature_mb_s": round(size / sig_s, 1),
            "signature_vs_sha256": round(sig_s / sha_s, 3),
        }
        print(f"version of {size} MiB: signed in {sign_s:.2f}s")
        print(f"sha256 pass (fetch check)      {sha_s:7.3f}s  {size / sha_s:8.1f} MiB/s")
        print(f"signature verification (adds) {sig_s:7.3f}s  {size / sig_s:8.1f} MiB/s")
        print(f"-> ratio signature/sha256 {sig_s / sha_s:.2f}; total with both {sha_s + sig_s:.2f}s")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
