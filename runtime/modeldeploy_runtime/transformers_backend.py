"""Triton python-backend model that serves a Hugging Face causal language model with ``transformers``.

``mdctl package --format transformers`` copies this file as ``<version>/model.py`` and the model
directory (config.json, safetensors shards, tokenizer files) into ``<version>/hf/``. The model is
*decoupled* (``model_transaction_policy { decoupled: true }``): each request gets one response per
generated piece of text when ``stream`` is true, and always a last response flagged
``TRITONSERVER_RESPONSE_COMPLETE_FINAL``.

The tensor interface is the one of Triton's vLLM backend, so the OpenAI-compatible endpoint
(modeldeploy_runtime.openai_server) talks to either the same way:

* inputs: ``text_input`` (BYTES [1]), ``stream`` (BOOL [1], optional), ``sampling_parameters``
  (BYTES [1], optional JSON: max_tokens, temperature, top_p, stop, seed),
  ``exclude_input_in_output`` (BOOL [1], optional; the prompt is never repeated here);
* outputs: ``text_output`` (BYTES [-1]: the new text of this response), ``num_input_tokens`` and
  ``num_output_tokens`` (INT32 [1], cumulative), ``finish_reason`` (BYTES [1]: "", "stop", "length",
  "cancelled").

Each request is generated on its own thread (at most ``MODELDEPLOY_LLM_MAX_CONCURRENCY``, default 16,
at a time); the thread checks ``is_cancelled()`` before every token, so a client that goes away stops
its generation. Two custom metrics on Triton's /metrics show what runs:
``modeldeploy_llm_generations_active`` (gauge) and ``modeldeploy_llm_generated_tokens_total``.

This file runs inside the python-backend stub: it imports only numpy, torch, transformers and
triton_python_backend_utils, nothing from modeldeploy.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

HF_DIR = "hf"
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class SamplingError(ValueError):
    pass


def _float(p: dict[str, Any], key: str, default: float) -> float:
    v = p.get(key)
    try:
        return default if v is None else float(v)
    except (TypeError, ValueError):
        raise SamplingError(f"{key}: expected a number, got {v!r}") from None


def _parse_sampling(raw: str) -> dict[str, Any]:
    try:
        p = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise SamplingError(f"sampling_parameters: invalid JSON: {exc}") from exc
    if not isinstance(p, dict):
        raise SamplingError("sampling_parameters: expected a JSON object")
    max_tokens = int(_float(p, "max_tokens", 16))
    temperature = _float(p, "temperature", 1.0)
    top_p = _float(p, "top_p", 1.0)
    stop = p.get("stop") or []
    if max_tokens < 1:
        raise SamplingError(f"max_tokens: must be >= 1, got {max_tokens}")
    if temperature < 0:
        raise SamplingError(f"temperature: must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise SamplingError(f"top_p: must be in (0, 1], got {top_p}")
    return {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": p.get("seed"),
        "stop": [stop] if isinstance(stop, str) else [str(s) for s in stop],
    }


def _optional(request: Any, name: str) -> Any:
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy().reshape(-1)[0]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _StopMatcher:
    """Finds the stop strings in the generated text; holds back a tail that could start one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) - 1 for s in self.stops), default=0)

    def cut(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None


class _Sender:
    """A response sender whose calls hold the model's IPC lock."""

    def __init__(self, sender: Any, lock: threading.Lock) -> None:
        self.sender = sender
        self.lock = lock

    def send(self, response: Any = None, flags: int = 0) -> None:
        with self.lock:
            if response is None:
                self.sender.send(flags=flags)
            else:
                self.sender.send(response, flags=flags)

    def is_cancelled(self) -> bool:
        with self.lock:
            return bool(self.sender.is_cancelled())


def spawn_requests(
    requests: list[Any], ipc: Any, lock: threading.Lock, threads: set[threading.Thread], serve: Any
) -> None:
    """Start ``serve(prompt, stream, raw_sampling, sender)`` on a thread of its own per request of
    the text interface (also used by the TensorRT-LLM text front, which loads this file). Inputs and
    the sender are taken here, on the stub's thread; generation runs on its own."""
    for request in requests:
        raw = _optional(request, "sampling_parameters")
        job = (
            _text(_optional(request, "text_input") or b""),
            bool(_optional(request, "stream") or False),
            _text(raw) if raw is not None else "",
            _Sender(request.get_response_sender(), ipc),
        )
        th = threading.Thread(target=serve, args=job, daemon=True)
        with lock:
            threads.add(th)
        th.start()


def text_response(text: str, n_in: int, n_out: int, finish: str) -> Any:
    """One response of the text interface every LLM entry serves (``text_output``, token counts,
    ``finish_reason``); also used by the TensorRT-LLM text front, which loads this file."""
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_)),
            pb_utils.Tensor("num_input_tokens", np.array([n_in], dtype=np.int32)),
            pb_utils.Tensor("num_output_tokens", np.array([n_out], dtype=np.int32)),
            pb_utils.Tensor("finish_reason", np.array([finish.encode()], dtype=np.object_)),
        ]
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        threads = os.environ.get("MODELDEPLOY_MODEL_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        gpu = args.get("model_instance_kind", "CPU") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu")
        folder = os.path.join(args["model_repository"], args["model_version"], HF_DIR)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        model: Any = AutoModelForCausalLM.from_pretrained(folder)
        self.model = model.to(self.device).eval()
        self.new_cache_api = "cache" in inspect.signature(self.model.forward).parameters
        self.eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(self.eos if isinstance(self.eos, list) else [] if self.eos is None else [self.eos])
        self.slots = threading.Semaphore(int(os.environ.get("MODELDEPLOY_LLM_MAX_CONCURRENCY", "16")))
        self.threads: set[threading.Thread] = set()
        self.lock = threading.Lock()
        # The stub's response senders are not safe to use from several threads at once (Triton
        # crashes on the shared-memory lock): every send/is_cancelled goes through this lock.
        self.ipc = threading.Lock()
        self.active_family = pb_utils.MetricFamily(
            name="modeldeploy_llm_generations_active",
            description="Generations running in this model instance",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.tokens_family = pb_utils.MetricFamily(
            name="modeldeploy_llm_generated_tokens_total",
            description="Tokens generated by this model instance",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.active = self.active_family.Metric(labels=labels)
        self.tokens = self.tokens_family.Metric(labels=labels)

    # ------------------------------------------------------------------------------------ requests
    def execute(self, requests: list[Any]) -> None:
        spawn_requests(requests, self.ipc, self.lock, self.threads, self._serve)

    def _serve(self, prompt: str, stream: bool, raw: str, sender: _Sender) -> None:
        try:
            with self.slots:
                with self.ipc:
                    self.active.increment(1)
                try:
                    self._generate(prompt, stream, _parse_sampling(raw), sender)
                finally:
                    with self.ipc:
                        self.active.increment(-1)
        except SamplingError as exc:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))), flags=FINAL)
        except Exception as exc:
            err = pb_utils.TritonError(f"generation failed: {exc.__class__.__name__}: {exc}")
            sender.send(pb_utils.InferenceResponse(error=err), flags=FINAL)
        finally:
            with self.lock:
                self.threads.discard(threading.current_thread())

    def _response(self, text: str, n_in: int, n_out: int, finish: str) -> Any:
        return text_response(text, n_in, n_out, finish)

    def _generate(self, prompt: str, stream: bool, params: dict[str, Any], sender: _Sender) -> None:
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        n_in = int(ids.shape[1])
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and n_in + 1 > limit:
            raise SamplingError(f"text_input: {n_in} tokens, the model's context is {limit}")
        max_new = min(params["max_tokens"], limit - n_in) if limit else params["max_tokens"]
        gen = _Generation(self, ids, params)
        matcher = _StopMatcher(params["stop"])
        sent = ""
        text = ""
        finish = "length"
        for _ in range(max_new):
            if sender.is_cancelled():
                finish = "cancelled"
                break
            token = gen.step()
            with self.ipc:
                self.tokens.increment(1)
            text = str(self.tokenizer.decode(gen.out, skip_special_tokens=True))
            if token in self.eos_ids:
                finish = "stop"
                break
            cut = matcher.cut(text)
            if cut is not None:
                text, finish = text[:cut], "stop"
                break
            ready = (text[: len(text) - matcher.hold] if matcher.hold else text).rstrip("\ufffd")
            if stream and len(ready) > len(sent) and ready.startswith(sent):
                sender.send(self._response(ready[len(sent) :], n_in, len(gen.out), ""))
                sent = ready
        if finish == "cancelled":
            sender.send(flags=FINAL)
            return
        rest = text[len(sent) :] if stream and text.startswith(sent) else text
        sender.send(self._response(rest, n_in, len(gen.out), finish), flags=FINAL)

    def finalize(self) -> None:
        with self.lock:
            threads = list(self.threads)
        for th in threads:
            th.join(timeout=5)
        self.model = None


class _Generation:
    """Token-by-token decoding with the key/value cache: greedy (argmax, what ``generate`` does
    with ``do_sample=False``) when temperature is 0, else sampling with temperature/top_p from a
    generator seeded with ``seed`` when given."""

    def __init__(self, owner: TritonPythonModel, ids: Any, params: dict[str, Any]) -> None:
        self.torch = owner.torch
        self.model = owner.model
        self.device = owner.device
        self.next_input = ids
        self.past: Any = None
        self.new_cache_api = owner.new_cache_api
        self.out: list[int] = []
        self.temperature = params["temperature"]
        self.top_p = params["top_p"]
        self.generator: Any = None
        if self.temperature > 0:
            self.generator = self.torch.Generator(device=self.device)
            seed = params["seed"]
            if seed is not None:
                self.generator.manual_seed(int(seed))
            else:
                self.generator.seed()

    def step(self) -> int:
        torch = self.torch
        # transformers >= 5.2x names the key/value cache ``cache``; older releases ``past_key_values``
        key = "cache" if self.new_cache_api else "past_key_values"
        with torch.inference_mode():
            res = self.model(input_ids=self.next_input, use_cache=True, **{key: self.past})
        self.past = res[key]
        logits = res.logits[0, -1].float()
        token = self._pick(logits)
        self.out.append(token)
        self.next_input = torch.tensor([[token]], device=self.device)
        return token

    def _pick(self, logits: Any) -> int:
        torch = self.torch
        if self.generator is None:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, idx = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < self.top_p
            sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
            probs = torch.zeros_like(probs).scatter(0, idx, sorted_p)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self.generator).item())
