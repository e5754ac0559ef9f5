"""LLM serving benchmark: tokens/s, time to first token and inter-token latency through the
OpenAI-compatible endpoint, at concurrency 1 and 16 (issue #13).

    . .venv/bin/activate && hack/install-triton.sh && python bench/llm_bench.py [--device cuda] [--json out.json]

What runs: a tiny random-weight GPT-2 built locally (modeldeploy_runtime.tiny_lm, no download),
packaged with ``mdctl package`` (format transformers), served by the real tritonserver's python
backend (decoupled, streaming), behind ``modeldeploy-runtime openai`` (uvicorn). Each client sends
streaming /v1/completions requests (greedy, fixed max_tokens; ``stream_options.include_usage`` for
the exact token count) for a measurement window. Figures per concurrency level:

* ``tokens_per_s``: generated tokens of all completed requests / window;
* ``ttft_p50_ms`` / ``ttft_p99_ms``: request sent -> first content chunk;
* ``itl_p50_ms`` / ``itl_p99_ms``: gaps between successive content chunks.

With ``--device cuda`` the model instance is KIND_GPU (runs on the GPU when torch sees one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny-lm"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Client(threading.Thread):
    def __init__(self, url: str, stop: threading.Event, max_tokens: int, idx: int) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.max_tokens, self.idx = url, stop, max_tokens, idx
        self.ttft: list[float] = []
        self.itl: list[float] = []
        self.tokens = 0
        self.errors: list[str] = []

    def one(self, session: Any, n: int) -> None:
        body = {"model": MODEL, "prompt": f"hello world {self.idx} {n}", "max_tokens": self.max_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
        t0 = time.perf_counter()
        last: float | None = None
        with session.post(self.url + "/v1/completions", json=body, stream=True, timeout=300) as r:
            if r.status_code != 200:
                self.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            for line in r.iter_lines():
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if ev.get("usage"):
                    self.tokens += ev["usage"]["completion_tokens"]
                if ev["choices"] and ev["choices"][0].get("text"):
                    now = time.perf_counter()
                    if last is None:
                        self.ttft.append(now - t0)
                    else:
                        self.itl.append(now - last)
                    last = now

    def run(self) -> None:
        import requests

        s = requests.Session()
        n = 0
        while not self.stop.is_set():
            try:
                self.one(s, n)
            except Exception as exc:
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
            n += 1


def measure(url: str, concurrency: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    stop = threading.Event()
    clients = [Client(url, stop, max_tokens, i) for i in range(concurrency)]
    t0 = time.perf_counter()
    for c in clients:
        c.start()
    time.sleep(seconds)
    stop.set()
    for c in clients:
        c.join(300)
    wall = time.perf_counter() - t0  # includes finishing the requests in flight
    ttft = [x for c in clients for x in c.ttft]
    itl = [x for c in clients for x in c.itl]
    errors = [e for c in clients for e in c.errors]
    return {
        "concurrency": concurrency,
        "requests": len(ttft),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "tokens": sum(c.tokens for c in clients),
        "tokens_per_s": sum(c.tokens for c in clients) / wall,
        "ttft_p50_ms": _pct(ttft, 50) * 1e3,
        "ttft_p99_ms": _pct(ttft, 99) * 1e3,
        "itl_p50_ms": _pct(itl, 50) * 1e3,
        "itl_p99_ms": _pct(itl, 99) * 1e3,
    }


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the OpenAI endpoint exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout}s")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from modeldeploy_runtime.package import package_transformers
    from modeldeploy_runtime.ports import free_port
    from modeldeploy_runtime.tiny_lm import build_tiny_lm
    from modeldeploy_runtime.triton import TritonServer

    hf = build_tiny_lm(work / "hf", layers=args.layers, hidden=args.hidden)
    kind = "KIND_GPU" if args.device == "cuda" else "KIND_CPU"
    package_transformers(hf, work / "repo", MODEL, instance_kind=kind)
    os.environ.setdefault("MODELDEPLOY_MODEL_THREADS", str(args.threads))
    out: dict[str, Any] = {"device": args.device, "max_tokens": args.max_tokens, "seconds": args.seconds}
    with TritonServer(
        work / "repo", load_models=[MODEL], log_path=work / "triton.log", exit_timeout_secs=1
    ) as srv:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        cmd = [sys.executable, "-m", "modeldeploy_runtime.cli", "openai", "--repository", str(work / "repo"),
               "--triton-grpc", srv.grpc_address, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with open(work / "openai.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_http(url + "/v1/models", proc, 120)
                measure(url, 1, min(1.0, args.seconds), args.max_tokens)  # warm-up
                out["levels"] = [measure(url, c, args.seconds, args.max_tokens) for c in args.concurrency]
            finally:
                proc.terminate()
                proc.wait(30)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--concurrency", type=int, action="append", help="levels (default: 1 and 16)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement window per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the model instance")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    args.concurrency = args.concurrency or [1, 16]
    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    try:
        out = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"tiny GPT-2 ({args.layers} layers, hidden {args.hidden}) on {args.device}, greedy, "
          f"max_tokens {args.max_tokens}, {args.seconds:.0f} s per level")  # fmt: skip
    for lv in out["levels"]:
        print(
            f"concurrency {lv['concurrency']:>3}: {lv['tokens_per_s']:8.1f} tokens/s  "
            f"TTFT p50 {lv['ttft_p50_ms']:7.1f} ms p99 {lv['ttft_p99_ms']:7.1f} ms  "
            f"ITL p50 {lv['itl_p50_ms']:6.2f} ms p99 {lv['itl_p99_ms']:6.2f} ms  "
            f"({lv['requests']} requests, {lv['errors']} errors)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 1 if any(lv["errors"] for lv in out["levels"]) else 0


if __name__ == "__main__":
    sys.exit(main())
