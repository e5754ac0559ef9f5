"""An OpenAI-compatible HTTP endpoint in front of Triton's decoupled (streaming) LLM models.

``modeldeploy-runtime openai --repository /models --triton-grpc 127.0.0.1:8001`` serves

* ``GET  /v1/models``            the LLM models of the repository (decoupled, with a tokenizer);
* ``POST /v1/completions``       ``prompt`` -> text; ``stream: true`` sends server-sent events;
* ``POST /v1/chat/completions``  ``messages`` through the tokenizer's chat template;
* ``GET  /metrics``              Prometheus: requests, tokens in/out, time to first token,
  inter-token latency, requests in flight, cancelled generations;
* ``GET  /health``               200 while Triton is reachable.

Generation goes through Triton's gRPC streaming API (``ModelStreamInfer``) with the tensor interface
of Triton's vLLM backend (``text_input``, ``stream``, ``sampling_parameters`` -> ``text_output``),
which the transformers python-backend model (transformers_backend.py) and the text front of a
tensorrtllm model (trtllm_text_backend.py, over its ``<name>-engine``) implement too: the endpoint
works the same in front of each. The tokenizer (read from ``<version>/hf/`` of the newest version
present) applies the chat template and counts prompt tokens; a prompt that does not fit the model's
context is refused before it reaches Triton. When a streaming client goes away, the gRPC call is
cancelled and the model stops generating.

Built on FastAPI/Starlette and uvicorn (the ``llm`` extra). They, tritonclient and transformers are
imported inside functions: the runtime image starts without them.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at runtime.

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy_runtime.config import CONFIG_FILE, ConfigProblem, load_config
from modeldeploy_runtime.hf import HF_DIR, context_length

MAX_STOP = 4


class OpenAIError(Exception):
    """An error answered in the OpenAI shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------------ models
@dataclass
class LLMModel:
    name: str
    version_dir: Path
    context: int | None
    tokenizer: Any = None

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])


@dataclass
class Repository:
    """The LLM models of a Triton model repository: decoupled models with a Hugging Face directory."""

    root: Path
    only: list[str] = field(default_factory=list)
    _loaded: dict[Path, LLMModel] = field(default_factory=dict)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [m.name for m in sorted(self.root.iterdir()) if self._version_dir(m) is not None]

    def _version_dir(self, model_dir: Path) -> Path | None:
        if self.only and model_dir.name not in self.only:
            return None
        try:
            cfg = load_config(model_dir / CONFIG_FILE)
        except (OSError, ConfigProblem):
            return None
        if not cfg.decoupled:
            return None
        versions = sorted(
            (int(v.name) for v in model_dir.iterdir() if v.name.isdigit() and (v / HF_DIR).is_dir()),
            reverse=True,
        )
        return model_dir / str(versions[0]) if versions else None

    def get(self, name: str) -> LLMModel:
        vdir = self._version_dir(self.root / name) if name and "/" not in name else None
        if vdir is None:
            raise OpenAIError(404, f"The model '{name}' does not exist", "model", "model_not_found")
        model = self._loaded.get(vdir)
        if model is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(vdir / HF_DIR))
            model = LLMModel(name, vdir, context_length(vdir / HF_DIR), tok)
            self._loaded[vdir] = model
        return model


# ---------------------------------------------------------------------------------------- requests
def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise OpenAIError(400, f"'{key}' must be a number between {lo} and {hi}, got {v!r}", key)
    return float(v)


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(isinstance(s, str) for s in stops):
        raise OpenAIError(400, f"'stop' must be a string or a list of up to {MAX_STOP} strings", "stop")
    return stops


def _int(body: dict[str, Any], key: str, lo: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise OpenAIError(400, f"'{key}' must be an integer >= {lo}, got {v!r}", key)
    return v


@dataclass
class GenRequest:
    model: LLMModel
    prompt: str
    prompt_tokens: int
    max_tokens: int
    params: dict[str, Any]
    stream: bool
    include_usage: bool


def _prompt(body: dict[str, Any], model: LLMModel, chat: bool) -> str:
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise OpenAIError(400, "'messages' must be a non-empty list", "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
                raise OpenAIError(400, f"'messages[{i}]' needs a 'role' and a 'content'", f"messages[{i}]")
        if not getattr(model.tokenizer, "chat_template", None):
            raise OpenAIError(400, f"model '{model.name}' has no chat template", "messages")
        return str(model.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise OpenAIError(400, "'prompt' must be a string (or a list of one string)", "prompt")
    return prompt


def parse_request(body: Any, repo: Repository, chat: bool) -> GenRequest:
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    name = body.get("model")
    if not isinstance(name, str):
        raise OpenAIError(400, "'model' is required", "model")
    model = repo.get(name)
    if body.get("n", 1) != 1:
        raise OpenAIError(400, "only 'n' = 1 is supported", "n")
    prompt = _prompt(body, model, chat)
    n_prompt = len(model.tokenize(prompt))
    where = "messages" if chat else "prompt"
    if model.context and n_prompt >= model.context:
        raise OpenAIError(
            400, f"This model's maximum context length is {model.context} tokens; the {where} has "
            f"{n_prompt} tokens", where, "context_length_exceeded",
        )  # fmt: skip
    room = (model.context - n_prompt) if model.context else 1 << 30
    max_tokens = _int(body, "max_tokens", 1)
    if chat and max_tokens is None:
        max_tokens = _int(body, "max_completion_tokens", 1)
    max_tokens = min(max_tokens or (room if chat else 16), room)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise OpenAIError(400, f"'seed' must be an integer, got {seed!r}", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, f"'stream' must be a boolean, got {stream!r}", "stream")
    opts = body.get("stream_options") or {}
    params = {
        "max_tokens": max_tokens,
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0),
        "stop": _stop(body),
        "seed": seed,
    }
    if params["top_p"] == 0:
        raise OpenAIError(400, "'top_p' must be greater than 0", "top_p")
    include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    return GenRequest(model, prompt, n_prompt, max_tokens, params, stream, include_usage)


# ------------------------------------------------------------------------------------------ triton
@dataclass
class Piece:
    text: str
    output_tokens: int | None
    finish_reason: str | None
    final: bool


def _piece(result: Any) -> Piece:
    resp = result.get_response()
    final = bool(resp.parameters["triton_final_response"].bool_param) if "triton_final_response" in (
        resp.parameters
    ) else False  # fmt: skip
    names = {o.name for o in resp.outputs}
    text = ""
    if "text_output" in names:
        arr = result.as_numpy("text_output")
        text = "".join(
            x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)
        )
    n_out = int(result.as_numpy("num_output_tokens").reshape(-1)[0]) if "num_output_tokens" in names else None
    finish = None
    if "finish_reason" in names:
        raw = result.as_numpy("finish_reason").reshape(-1)[0]
        finish = (raw.decode() if isinstance(raw, bytes) else str(raw)) or None
    return Piece(text, n_out, finish, final)


class TritonStream:
    """One generation over Triton's gRPC stream (``ModelStreamInfer``); ``cancel()`` stops it on the
    server. The request asks for an empty final response (``triton_enable_empty_final_response``,
    which tritonclient's asyncio ``stream_infer`` cannot set) so the end is known for every backend."""

    def __init__(self, stub: Any, req: GenRequest) -> None:
        self.stub = stub
        self.req = req
        self.call: Any = None

    def _request(self) -> Any:
        import numpy as np
        import tritonclient.grpc as grpcclient
        from tritonclient.grpc._utils import _get_inference_request

        def tensor(name: str, dtype: str, value: Any) -> Any:
            t = grpcclient.InferInput(name, [1], dtype)
            t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else np.bool_))
            return t

        inputs = [
            tensor("text_input", "BYTES", self.req.prompt.encode()),
            tensor("stream", "BOOL", self.req.stream),
            tensor("sampling_parameters", "BYTES", json.dumps(self.req.params).encode()),
            tensor("exclude_input_in_output", "BOOL", True),
        ]
        request = _get_inference_request(
            model_name=self.req.model.name, inputs=inputs, model_version="", request_id=uuid.uuid4().hex,
            outputs=None, sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
            parameters=None,
        )  # fmt: skip
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        return request

    async def pieces(self) -> AsyncIterator[Piece]:
        from tritonclient.grpc import InferResult

        done = asyncio.Event()
        request = self._request()

        async def requests() -> AsyncIterator[Any]:
            yield request
            # Closing the request side ends the gRPC stream: keep it open until the final response.
            await done.wait()

        self.call = self.stub.ModelStreamInfer(requests())
        try:
            async for response in self.call:
                if response.error_message:
                    raise OpenAIError(
                        500, f"generation failed: {response.error_message}", code="generation_failed"
                    )
                piece = _piece(InferResult(response.infer_response))
                yield piece
                if piece.final:
                    return
        finally:
            done.set()

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()


# ----------------------------------------------------------------------------------------- metrics
class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        p = "modeldeploy_openai_"
        self.requests = Counter(p + "requests", "Requests by endpoint and HTTP status", ["model", "endpoint", "status"], registry=r)  # fmt: skip
        self.prompt_tokens = Counter(p + "prompt_tokens", "Prompt tokens received", ["model"], registry=r)
        self.completion_tokens = Counter(p + "completion_tokens", "Tokens generated", ["model"], registry=r)
        self.in_flight = Gauge(p + "requests_in_flight", "Generations in progress", ["model"], registry=r)
        self.cancelled = Counter(p + "cancelled", "Streams the client left before the end", ["model"], registry=r)  # fmt: skip
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "Time to first token", ["model"], buckets=buckets, registry=r)  # fmt: skip
        self.itl = Histogram(p + "inter_token_latency_seconds", "Time between streamed chunks", ["model"], buckets=buckets, registry=r)  # fmt: skip

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


# ---------------------------------------------------------------------------------------- handlers
def _chunk(rid: str, req: GenRequest, chat: bool, text: str | None, finish: str | None) -> dict[str, Any]:
    if chat:
        delta: dict[str, Any] = {} if text is None else {"content": text}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        kind = "text_completion"
    return {
        "id": rid,
        "object": kind,
        "created": int(time.time()),
        "model": req.model.name,
        "choices": [choice],
    }


def _usage(req: GenRequest, n_out: int) -> dict[str, int]:
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": n_out,
        "total_tokens": req.prompt_tokens + n_out,
    }


def _finish(piece: Piece, n_out: int, req: GenRequest) -> str:
    if piece.finish_reason in ("stop", "length"):
        return piece.finish_reason
    return "length" if n_out >= req.max_tokens else "stop"


class Generation:
    """Runs one request against Triton and records its metrics."""

    def __init__(self, client: Any, req: GenRequest, metrics: Metrics) -> None:
        self.req = req
        self.metrics = metrics
        self.stream = TritonStream(client, req)
        self.t0 = time.monotonic()
        self.last: float | None = None
        self.text = ""
        self.n_out: int | None = None
        self.last_piece: Piece | None = None

    def record(self, piece: Piece) -> None:
        now = time.monotonic()
        if piece.text:
            m = self.req.model.name
            if self.last is None:
                self.metrics.ttft.labels(m).observe(now - self.t0)
            else:
                self.metrics.itl.labels(m).observe(now - self.last)
            self.last = now
        self.text += piece.text
        if piece.output_tokens is not None:
            self.n_out = piece.output_tokens
        if piece.finish_reason or piece.output_tokens is not None:
            self.last_piece = piece

    def completion_tokens(self) -> int:
        return self.n_out if self.n_out is not None else len(self.req.model.tokenize(self.text))

    def finish_reason(self) -> str:
        return _finish(self.last_piece or Piece("", None, None, True), self.completion_tokens(), self.req)

    def account(self) -> None:
        m = self.req.model.name
        self.metrics.prompt_tokens.labels(m).inc(self.req.prompt_tokens)
        self.metrics.completion_tokens.labels(m).inc(self.completion_tokens())


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()


async def _complete(gen: Generation, chat: bool) -> dict[str, Any]:
    async for piece in gen.stream.pieces():
        gen.record(piece)
    gen.account()
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    out = _chunk(rid, gen.req, chat, gen.text, gen.finish_reason())
    if chat:
        out["object"] = "chat.completion"
        out["choices"][0]["message"] = {"role": "assistant", "content": gen.text}
        del out["choices"][0]["delta"]
    out["usage"] = _usage(gen.req, gen.completion_tokens())
    return out


async def _events(
    gen: Generation, chat: bool, first: Piece | None, rest: AsyncIterator[Piece]
) -> AsyncIterator[bytes]:
    """The SSE body: the first piece was awaited before the response started (errors before the
    first token are plain HTTP errors, later ones an ``{"error": ...}`` event before ``[DONE]``); a
    client that goes away cancels the Triton call."""
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    req = gen.req
    done = False
    try:
        if chat:
            yield _sse({**_chunk(rid, req, chat, None, None), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}]})  # fmt: skip
        piece = first
        try:
            while piece is not None:
                if piece.text:
                    yield _sse(_chunk(rid, req, chat, piece.text, None))
                if piece.final:
                    break
                piece = await anext(rest, None)
                if piece is not None:
                    gen.record(piece)
        except OpenAIError as exc:  # Triton failed mid-stream: an error event ends the stream
            done = True
            yield _sse(exc.body())
            yield _sse("[DONE]")
            return
        done = True
        gen.account()
        yield _sse(_chunk(rid, req, chat, None if chat else "", gen.finish_reason()))
        if req.include_usage:
            yield _sse({**_chunk(rid, req, chat, None, None), "choices": [], "usage": _usage(req, gen.completion_tokens())})  # fmt: skip
        yield _sse("[DONE]")
    finally:
        if not done:
            gen.stream.cancel()
            gen.metrics.cancelled.labels(req.model.name).inc()
        gen.metrics.in_flight.labels(req.model.name).dec()


def create_app(repository: str | Path, triton_grpc: str, models: list[str] | None = None) -> Any:
    """The FastAPI application (uvicorn runs it; tests may too)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    repo = Repository(Path(repository), list(models or []))
    metrics = Metrics()
    state: dict[str, Any] = {}
    app = FastAPI(title="modeldeploy OpenAI-compatible endpoint", docs_url=None, redoc_url=None)

    def client() -> Any:
        """Triton's gRPC service stub on one channel (created in the server's event loop)."""
        if "stub" not in state:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            state["channel"] = grpc.aio.insecure_channel(triton_grpc)
            state["stub"] = service_pb2_grpc.GRPCInferenceServiceStub(state["channel"])
        return state["stub"]

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> Any:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/v1/models")
    async def list_models() -> Any:
        names = await asyncio.to_thread(repo.names)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "modeldeploy"} for n in names]}  # fmt: skip

    @app.get("/v1/models/{name}")
    async def get_model(name: str) -> Any:
        await asyncio.to_thread(repo.get, name)
        return {"id": name, "object": "model", "created": 0, "owned_by": "modeldeploy"}

    @app.get("/metrics")
    async def prom() -> Any:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health() -> Any:
        import grpc
        from tritonclient.grpc import service_pb2

        try:
            live = (await client().ServerLive(service_pb2.ServerLiveRequest(), timeout=2)).live
        except grpc.aio.AioRpcError as exc:
            return JSONResponse({"live": False, "error": exc.code().name}, status_code=503)
        return JSONResponse({"live": bool(live)}, status_code=200 if live else 503)

    async def generate(request: Request, chat: bool) -> Any:
        endpoint = "chat" if chat else "completions"
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            metrics.requests.labels("", endpoint, "400").inc()
            raise OpenAIError(400, f"malformed JSON body: {exc}", code="invalid_json") from exc
        try:
            req = await asyncio.to_thread(parse_request, body, repo, chat)
        except OpenAIError as exc:
            metrics.requests.labels(str(body.get("model", "")) if isinstance(body, dict) else "", endpoint, str(exc.status)).inc()  # fmt: skip
            raise
        gen = Generation(client(), req, metrics)
        metrics.in_flight.labels(req.model.name).inc()
        if not req.stream:
            try:
                out = await _complete(gen, chat)
            except OpenAIError as exc:
                metrics.requests.labels(req.model.name, endpoint, str(exc.status)).inc()
                raise
            finally:
                metrics.in_flight.labels(req.model.name).dec()
            metrics.requests.labels(req.model.name, endpoint, "200").inc()
            return out
        rest = gen.stream.pieces()
        try:
            first = await anext(rest, None)
        except OpenAIError as exc:
            metrics.in_flight.labels(req.model.name).dec()
            metrics.requests.labels(req.model.name, endpoint, str(exc.status)).inc()
            raise
        if first is not None:
            gen.record(first)
        metrics.requests.labels(req.model.name, endpoint, "200").inc()
        return StreamingResponse(_events(gen, chat, first, rest), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await generate(request, chat=True)

    return app


def serve(repository: str, triton_grpc: str, host: str, port: int, models: list[str] | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(repository, triton_grpc, models), host=host, port=port, log_level="warning")
