"""Runtime commands, shared by ``mdctl`` and ``modeldeploy-runtime`` (the pod agent's entry point).

* ``package``  turn a model (TorchScript file, ``module:factory`` nn.Module, ONNX file, python model)
  into a Triton repository entry;
* ``lint``     check a model repository;
* ``fetch``    fetch one version from a source into a repository (what the agent does);
* ``agent``    run the pod agent (``--mode init|sidecar``);
* ``openai``   serve an OpenAI-compatible API over Triton's LLM models (the ``llm`` extra);
* ``health``   exec-probe helper: exit 0 when a URL answers 200.

Heavy imports (torch, boto3) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeploy_runtime import __version__

if TYPE_CHECKING:
    from modeldeploy_runtime.package import PackageResult


def _tensor_arg(text: str) -> Any:
    """NAME:TYPE:DIMS, e.g. INPUT__0:TYPE_FP32:3,224,224 (or FP32 / float32)."""
    from modeldeploy_runtime.config import TORCH_TO_TRITON, TRITON_DTYPES, TensorSpec

    try:
        name, dtype, dims = text.split(":")
        dt = dtype.upper()
        if not dt.startswith("TYPE_"):
            dt = TORCH_TO_TRITON.get(dtype.lower(), f"TYPE_{dt}")
        if dt not in TRITON_DTYPES:
            raise ValueError(f"unknown data type {dtype!r}")
        return TensorSpec(name, dt, [int(d) for d in dims.split(",") if d])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME:TYPE:DIMS like x:TYPE_FP32:3,224,224 ({exc})"
        ) from exc


def _batching(args: argparse.Namespace) -> Any:
    from modeldeploy_runtime.package import BatchingOptions

    return BatchingOptions(
        max_batch_size=8 if args.max_batch_size is None else args.max_batch_size,
        dynamic_batching=not args.no_dynamic_batching,
        preferred_batch_sizes=[int(x) for x in args.preferred_batch_sizes.split(",") if x]
        if args.preferred_batch_sizes
        else [],
        max_queue_delay_microseconds=args.max_queue_delay_us,
        instance_count=args.instances,
        instance_kind=args.instance_kind,
    )


def cmd_package(args: argparse.Namespace) -> int:
    from modeldeploy_runtime.package import PackageError, package_onnx, package_python, package_torch

    src = args.source
    fmt = args.format
    if fmt == "auto":
        if Path(src).is_dir() and (Path(src) / "config.json").is_file():
            fmt = "transformers"
        elif ":" in src and not Path(src).exists():
            fmt = "module"
        elif src.endswith(".onnx"):
            fmt = "onnx"
        elif src.endswith(".py"):
            fmt = "python"
        else:
            fmt = "torchscript"
    name = args.name or Path(src.split(":")[0]).stem.replace("model", "") or "model"
    if fmt in ("transformers", "vllm", "tensorrtllm"):
        return _package_llm(args, name, fmt)
    allowed = {"torchscript": ("python", "libtorch"), "module": ("python", "libtorch"),
               "onnx": ("onnxruntime", "python"), "python": ("python",),
               "transformers": ("python",)}.get(fmt, ())  # fmt: skip
    if args.backend is not None and args.backend not in allowed:
        print(f"error: --backend {args.backend} does not apply to {fmt} models (use one of: {', '.join(allowed)})",
              file=sys.stderr)  # fmt: skip
        return 2
    backend: Any = args.backend or (allowed[0] if allowed else None)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        if fmt in ("torchscript", "module"):
            import torch

            if not args.example_shape:
                print(
                    "error: --example-shape is required for torch models (e.g. --example-shape 1,4)",
                    file=sys.stderr,
                )
                return 2
            dtype = getattr(torch, args.example_dtype, None)
            if not isinstance(dtype, torch.dtype):
                print(f"error: --example-dtype {args.example_dtype!r} is not a torch dtype", file=sys.stderr)
                return 2
            shapes = [[int(d) for d in s.split(",")] for s in args.example_shape]
            example = tuple(
                torch.zeros(s, dtype=dtype) if not dtype.is_floating_point else torch.randn(s).to(dtype)
                for s in shapes
            )
            model: Any = src
            if fmt == "module":
                mod_name, _, attr = src.partition(":")
                sys.path.insert(0, str(Path.cwd()))
                obj = getattr(importlib.import_module(mod_name), attr)
                model = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
            res = package_torch(
                model, args.repository, name, example_inputs=example, version=args.version, backend=backend,
                batching=_batching(args), method=args.export, progress=progress,
            )  # fmt: skip
        elif fmt == "onnx":
            res = package_onnx(
                src, args.repository, name, version=args.version, backend=backend,
                batching=_batching(args), progress=progress,
            )  # fmt: skip
        elif fmt == "python":
            res = package_python(
                src, args.repository, name, inputs=args.input or [], outputs=args.output or [],
                artifacts=args.artifact or [], version=args.version, batching=_batching(args), progress=progress,
            )  # fmt: skip
        else:
            print(f"error: unknown format {fmt!r}", file=sys.stderr)
            return 2
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return _report_packaged(args, res)


def _report_packaged(args: argparse.Namespace, res: PackageResult) -> int:
    """Sign the packaged version when asked, then print what was packaged (``--json``: one object)."""
    signer = _sign(args, res.version_dir) if args.sign_key else None
    if args.json:
        print(json.dumps({"model": res.model, "version": res.version, "path": str(res.version_dir), "sha256": res.digest,
                          "unchanged": res.unchanged, "seconds": round(res.seconds, 3), "files": res.files}))  # fmt: skip
    else:
        print(res.summary())
    if signer:
        print(f"signed {res.version_dir} ({signer})", file=sys.stderr if args.json else sys.stdout)
    return 0


def _sign(args: argparse.Namespace, folder: Path) -> str:
    from modeldeploy_runtime.signing import sign_folder

    return sign_folder(
        folder, args.sign_key, certificate=args.sign_cert, certificate_chain=args.sign_chain or []
    )


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify a version folder or every version of a repository; exit 1 when one fails."""
    from modeldeploy_runtime.signing import SignatureError, VerifyPolicy, verify_folder, version_folders

    if not args.public_key and not args.cert_chain:
        print("error: give --public-key or --cert-chain (with --identity)", file=sys.stderr)
        return 2
    policy = VerifyPolicy(
        public_key=Path(args.public_key) if args.public_key else None,
        certificate_chain=tuple(Path(c) for c in args.cert_chain or []),
        identity=args.identity,
        required=not args.allow_unsigned,
    )
    folders = version_folders(args.path)
    if not folders:
        print(f"error: {args.path}: no <model>/<version> folders", file=sys.stderr)
        return 2
    bad = 0
    for d in folders:
        try:
            res = verify_folder(d, policy)
        except SignatureError as exc:
            bad += 1
            print(f"{d}: {exc.reason}: {exc}")
            continue
        print(f"{d}: OK, signed by {res.signer}" if res else f"{d}: unsigned (allowed)")
    return 1 if bad else 0


def _engine_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of a vLLM engine argument; VALUE is JSON when it parses (numbers, true/false),
    else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE like enforce_eager=true")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _package_llm(args: argparse.Namespace, name: str, fmt: str) -> int:
    from modeldeploy_runtime.package import (
        PackageError,
        package_tensorrtllm,
        package_transformers,
        package_vllm,
    )

    if args.engine_arg and fmt != "vllm":
        print(f"error: --engine-arg applies to --format vllm, not {fmt}", file=sys.stderr)
        return 2
    if args.tokenizer and fmt != "tensorrtllm":
        print(f"error: --tokenizer applies to --format tensorrtllm, not {fmt}", file=sys.stderr)
        return 2
    kind = "KIND_CPU" if args.instance_kind == "KIND_AUTO" else args.instance_kind
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        if fmt == "vllm":
            res = package_vllm(
                args.source, args.repository, name, version=args.version,
                engine_args=dict(args.engine_arg or []), progress=progress,
            )  # fmt: skip
        elif fmt == "tensorrtllm":
            res = package_tensorrtllm(
                args.source, args.repository, name, tokenizer=args.tokenizer, version=args.version,
                max_batch_size=args.max_batch_size, progress=progress,
            )  # fmt: skip
        else:
            res = package_transformers(
                args.source, args.repository, name, version=args.version, instance_count=args.instances,
                instance_kind=kind, progress=progress,
            )  # fmt: skip
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return _report_packaged(args, res)


def cmd_lint(args: argparse.Namespace) -> int:
    from modeldeploy_runtime.lint import errors, lint_repository

    issues = lint_repository(args.repository)
    if args.json:
        print(
            json.dumps(
                [{"path": i.path, "message": i.message, "severity": i.severity} for i in issues], indent=2
            )
        )
    else:
        for i in issues:
            print(i)
        n_err = len(errors(issues))
        print(f"{args.repository}: {n_err} error(s), {len(issues) - n_err} warning(s)")
    return 1 if errors(issues) else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from modeldeploy_runtime.fetch import Fetcher, FetchError
    from modeldeploy_runtime.manifest import ManifestCredentials

    creds = ManifestCredentials(
        envPrefix=args.env_prefix, mountPath=args.credentials_dir, endpoint=args.endpoint
    )
    f = Fetcher(args.repository, progress=args.progress if args.progress is not None else sys.stderr.isatty())
    try:
        res = f.fetch(args.model, args.version, args.source, args.sha256, creds)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        f.cleanup_tmp()
    state = "already present" if res.cached else f"{res.bytes / 1e6:.1f} MB in {res.seconds:.2f}s"
    print(f"{args.model} version {args.version}: {res.version_dir} ({state}) sha256 {res.digest}")
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from modeldeploy_runtime.agent import Agent
    from modeldeploy_runtime.control import control_key_from_env, ensure_control_key, read_control_key
    from modeldeploy_runtime.pushsign import OWNER_ENV

    _setup_logging(args.log_format)
    control_key = control_key_from_env()  # local runs; in a pod: the pod's own key file
    if args.control_key_file and args.mode == "init":
        control_key = ensure_control_key(args.control_key_file)  # before Triton starts
    elif args.control_key_file:
        control_key = read_control_key(args.control_key_file)
        if control_key is None:
            print(f"error: no control key in {args.control_key_file}", file=sys.stderr)
            return 1
    agent = Agent(
        args.manifest,
        args.repository,
        args.triton_url,
        poll_interval=args.poll_interval,
        resync_interval=args.resync_interval,
        # the ModelDeployment pushes are signed for (a plain value in the pod spec); unset:
        # PUT /manifest answers 403 and only the mounted file counts
        push_owner=os.environ.get(OWNER_ENV),
        control_key=control_key,
    )
    if args.mode == "init":
        return agent.run_init()
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    srv = agent.make_server(args.host, args.port)
    th = threading.Thread(target=srv.serve_forever, name="agent-http", daemon=True)
    th.start()
    logging.getLogger("modeldeploy.runtime.agent").info(
        "agent listening on %s:%d", args.host, srv.server_address[1]
    )
    try:
        agent.run_sidecar(stop)
    finally:
        srv.shutdown()
    return 0


def cmd_openai(args: argparse.Namespace) -> int:
    from modeldeploy_runtime.openai_server import serve

    serve(args.repository, args.triton_grpc, args.host, args.port, args.model or None)
    return 0


def cmd_prefetch(args: argparse.Namespace) -> int:
    from modeldeploy_runtime.prefetch import run

    _setup_logging(args.log_format)
    manifest = os.environ.get(args.manifest_env, "") if args.manifest_env else None
    return run(
        args.manifest,
        args.cache_dir,
        args.termination_log,
        manifest_json=manifest,
        owner=args.owner,
        max_bytes=args.max_bytes,
        sharers_file=args.sharers_file,
        refs_grace_s=args.refs_grace_seconds,
    )


def cmd_health(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as r:
            code = r.status
            body = r.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        code = exc.code
        body = exc.read(2000).decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {args.url}: {exc}", file=sys.stderr)
        return 1
    if code == 200:
        if args.verbose:
            print(body.strip())
        return 0
    print(f"unhealthy: {args.url}: HTTP {code} {body.strip()}", file=sys.stderr)
    return 1


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _setup_logging(fmt: str) -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(
        _JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(logging.INFO)


def _progress_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="show a progress bar"
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    """Add this area's subcommands to mdctl (and to modeldeploy-runtime)."""
    p = sub.add_parser("package", help="package a model as a Triton model-repository entry")
    p.add_argument(
        "source",
        help="TorchScript file, ONNX file, model.py, module:factory returning an nn.Module, or a Hugging Face model directory",
    )
    p.add_argument("-r", "--repository", required=True, help="model repository folder")
    p.add_argument("-n", "--name", help="model name (default: from the file name)")
    p.add_argument("-v", "--version", type=int, help="version number (default: next free)")
    p.add_argument("--format", default="auto",
                   choices=["auto", "torchscript", "module", "onnx", "python", "transformers", "vllm", "tensorrtllm"],
                   help="transformers: a Hugging Face causal-LM directory (config.json, safetensors, tokenizer) served "
                        "with transformers in Triton's python backend, decoupled, streaming tokens (auto-detected); "
                        "vllm: the same directory for Triton's vLLM backend (model.json written in the pod); "
                        "tensorrtllm: a prebuilt TensorRT-LLM engine directory (*.engine + config.json), served as "
                        "NAME (a text front: tokenizer + streaming detokenization) over NAME-engine")  # fmt: skip
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tensorrtllm: the model's Hugging Face tokenizer folder (default: the engine directory, "
                        "when it holds tokenizer files)")  # fmt: skip
    p.add_argument("--engine-arg", action="append", type=_engine_arg, metavar="KEY=VALUE",
                   help="vllm: a vLLM engine argument packaged with the model, e.g. enforce_eager=true (repeat); "
                        "the ModelDeployment's llm settings override it in the pod")  # fmt: skip
    p.add_argument("--backend", choices=["python", "libtorch", "onnxruntime"],
                   help="python: a python-backend wrapper that runs the TorchScript/ONNX file on any Triton with the "
                        "python backend (default for torch); libtorch: pytorch_libtorch (torch only); onnxruntime: "
                        "onnxruntime_onnx (default for ONNX)")  # fmt: skip
    p.add_argument(
        "--export", default="trace", choices=["trace", "script"], help="torch export method for nn.Modules"
    )
    p.add_argument(
        "--example-shape",
        action="append",
        help="example input shape incl. batch, e.g. 1,3,32,32 (repeat per input)",
    )
    p.add_argument("--example-dtype", default="float32")
    p.add_argument(
        "--input", action="append", type=_tensor_arg, help="python models: NAME:TYPE:DIMS (repeat)"
    )
    p.add_argument(
        "--output", action="append", type=_tensor_arg, help="python models: NAME:TYPE:DIMS (repeat)"
    )
    p.add_argument(
        "--artifact", action="append", help="python models: extra file/folder to copy next to model.py"
    )
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="default 8; tensorrtllm: default the engine's build_config.max_batch_size")  # fmt: skip
    p.add_argument("--no-dynamic-batching", action="store_true")
    p.add_argument("--preferred-batch-sizes", default="", help="e.g. 4,8")
    p.add_argument("--max-queue-delay-us", type=int, default=100)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--instance-kind", default="KIND_AUTO", choices=["KIND_AUTO", "KIND_CPU", "KIND_GPU"])
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--sign-key", help="sign the version folder (OpenSSF model signing) with this PEM private key"
    )
    p.add_argument("--sign-cert", help="with --sign-key: the signing certificate (PEM)")
    p.add_argument("--sign-chain", action="append", help="with --sign-cert: chain certificates (PEM)")
    _progress_flags(p)
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("verify", help="verify the model signatures of a version folder or repository")
    p.add_argument("path", help="a <model>/<version> folder or a repository")
    p.add_argument("--public-key", help="trusted PEM public key")
    p.add_argument("--cert-chain", action="append", help="trusted certificate chain (PEM), repeatable")
    p.add_argument("--identity", help="with --cert-chain: the identity the signer's certificate must carry")
    p.add_argument("--allow-unsigned", action="store_true", help="unsigned versions pass (required: false)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("lint", help="check a Triton model repository")
    p.add_argument("repository")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser(
        "fetch", help="fetch one model version into a repository (verify, then rename into place)"
    )
    p.add_argument("source", help="file://, pvc://, s3://, https:// source")
    p.add_argument("-r", "--repository", required=True)
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-v", "--version", type=int, required=True)
    p.add_argument("--sha256")
    p.add_argument("--endpoint", help="S3-compatible endpoint URL")
    p.add_argument("--env-prefix", help="read <prefix>AWS_ACCESS_KEY_ID etc. from the environment")
    p.add_argument("--credentials-dir", help="folder with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY files")
    _progress_flags(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("agent", help="run the pod agent (init container or sidecar)")
    p.add_argument("--mode", choices=["init", "sidecar"], required=True)
    p.add_argument("--manifest", default="/etc/modeldeploy/manifest.json")
    p.add_argument("--repository", default="/models")
    p.add_argument("--triton-url", default="http://127.0.0.1:8000")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between manifest checks")
    p.add_argument("--resync-interval", type=float, default=5.0,
                   help="seconds between checks that Triton still serves the wanted versions (e.g. after a restart)")  # fmt: skip
    p.add_argument("--control-key-file",
                   help="the pod's Triton control key: created by --mode init when missing, read by the sidecar")  # fmt: skip
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser(
        "openai",
        help="serve an OpenAI-compatible API (/v1/completions, /v1/chat/completions) over Triton's LLMs",
    )
    p.add_argument("--repository", default="/models", help="model repository (tokenizers, model list)")
    p.add_argument("--triton-grpc", default="127.0.0.1:8001", help="Triton's gRPC address (host:port)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--model", action="append", help="serve only these models (repeat; default: every LLM)")
    p.set_defaults(func=cmd_openai)
    p = sub.add_parser("prefetch", help="fill the shared model cache with a manifest's versions")
    p.add_argument("--manifest", default="/etc/modeldeploy/manifest.json")
    p.add_argument("--manifest-env", help="read the manifest JSON from this environment variable instead")
    p.add_argument("--cache-dir", default="/cache")
    p.add_argument("--termination-log", default="/dev/termination-log")
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.add_argument("--owner", help="who wants these versions (namespace/name): recorded in the cache's refs")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="after filling, evict unreferenced entries (least recently used first) above this size",
    )
    p.add_argument(
        "--sharers-file",
        help="JSON {namespace, modelDeployments}: the cache's live users; with --max-bytes the refs "
        "of the namespace's others (deleted ModelDeployments) are removed before evicting",
    )
    p.add_argument(
        "--refs-grace-seconds",
        type=float,
        default=900.0,
        help="never remove a refs file younger than this (its owner may postdate the list)",
    )
    p.set_defaults(func=cmd_prefetch)

    p = sub.add_parser("health", help="exit 0 when URL answers HTTP 200 (for exec probes)")
    p.add_argument("--url", default="http://127.0.0.1:8080/ready")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_health)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeploy-runtime", description="modeldeploy runtime: package, lint, fetch, agent"
    )
    parser.add_argument("--version", action="version", version=f"modeldeploy-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
