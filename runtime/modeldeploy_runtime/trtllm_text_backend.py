"""Triton python-backend model: the text front of a TensorRT-LLM engine.

``mdctl package --format tensorrtllm`` copies this file as ``<version>/model.py``, the tokenizer
files into ``<version>/hf/``, the prebuilt engine into ``<version>/engine/`` and
transformers_backend.py as ``<version>/textgen.py`` (the sampling-parameter parsing, stop-string
matching and thread-safe sender this model shares with the transformers model). The engine itself
is served by Triton's TensorRT-LLM backend as the separate repository entry named by this model's
``engine_model`` parameter (``<name>-engine``), which takes and returns token ids.

This model has the text interface of the vLLM and transformers models (``text_input``, ``stream``,
``sampling_parameters`` -> ``text_output``, ``num_input_tokens``, ``num_output_tokens``,
``finish_reason``), so the OpenAI-compatible endpoint drives it like them. Per request it

* tokenizes the prompt with the Hugging Face tokenizer;
* sends the engine one streaming request through BLS (``InferenceRequest.exec(decoupled=True)``)
  with the TensorRT-LLM backend's inputs: ``input_ids``, ``input_lengths``,
  ``request_output_len`` (max_tokens, capped by the context), ``end_id``/``pad_id`` (the tokenizer's
  end-of-sequence and padding tokens), ``streaming``, ``exclude_input_in_output``, and for sampling
  ``temperature``, ``runtime_top_p``, ``random_seed`` (seed) or, for temperature 0, greedy decoding
  (``runtime_top_k`` 1);
* decodes the tokens received so far after each engine response and sends the new text, holding
  back an incomplete UTF-8 character (U+FFFD) and a tail that could begin a stop string, like the
  transformers model; a stop string or the client's cancellation ends the request (the BLS call is
  cancelled where the python backend supports it, else its remaining responses are dropped).

It imports only numpy, transformers and triton_python_backend_utils (and textgen.py), nothing from
modeldeploy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

HF_DIR = "hf"
ENGINE_DIR = "engine"
HELPERS = "textgen.py"
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _load_helpers(version_dir: str) -> Any:
    spec = importlib.util.spec_from_file_location("modeldeploy_textgen", os.path.join(version_dir, HELPERS))
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{version_dir}/{HELPERS}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context(version_dir: str) -> int | None:
    """The context window: the tokenizer folder's config.json, else the engine's build config."""
    for path, keys in (
        (os.path.join(version_dir, HF_DIR, "config.json"), ("max_position_embeddings", "n_positions")),
        (os.path.join(version_dir, ENGINE_DIR, "config.json"), ("max_seq_len",)),
    ):
        try:
            with open(path) as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            continue
        for section in (cfg, cfg.get("build_config") or {}, cfg.get("pretrained_config") or {}):
            for key in keys:
                if isinstance(section.get(key), int):
                    return int(section[key])
    return None


def _tensor(name: str, value: Any, dtype: Any) -> Any:
    """One request input with the leading batch dimension of the engine's batched config."""
    return pb_utils.Tensor(name, np.array([value], dtype=dtype).reshape(1, -1))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from transformers import AutoTokenizer

        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tg = _load_helpers(version_dir)
        config = json.loads(args["model_config"])
        self.engine = config["parameters"]["engine_model"]["string_value"]
        self.tokenizer = AutoTokenizer.from_pretrained(os.path.join(version_dir, HF_DIR))
        eos = self.tokenizer.eos_token_id
        self.end_id = int(eos if eos is not None else 0)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.end_id)
        self.context = _context(version_dir)
        self.ipc = threading.Lock()
        self.lock = threading.Lock()
        self.threads: set[threading.Thread] = set()

    def execute(self, requests: list[Any]) -> None:
        self.tg.spawn_requests(requests, self.ipc, self.lock, self.threads, self._serve)

    def _serve(self, prompt: str, stream: bool, raw: str, sender: Any) -> None:
        try:
            self._generate(prompt, stream, self.tg._parse_sampling(raw), sender)
        except self.tg.SamplingError as exc:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))), flags=FINAL)
        except Exception as exc:
            err = pb_utils.TritonError(f"generation failed: {exc.__class__.__name__}: {exc}")
            sender.send(pb_utils.InferenceResponse(error=err), flags=FINAL)
        finally:
            with self.lock:
                self.threads.discard(threading.current_thread())

    def _engine_request(self, ids: list[int], max_new: int, params: dict[str, Any]) -> Any:
        inputs = [
            pb_utils.Tensor("input_ids", np.array([ids], dtype=np.int32)),
            _tensor("input_lengths", len(ids), np.int32),
            _tensor("request_output_len", max_new, np.int32),
            _tensor("end_id", self.end_id, np.int32),
            _tensor("pad_id", self.pad_id, np.int32),
            _tensor("streaming", True, np.bool_),
            _tensor("exclude_input_in_output", True, np.bool_),
        ]
        if params["temperature"] == 0:  # greedy
            inputs.append(_tensor("runtime_top_k", 1, np.int32))
        else:
            inputs.append(_tensor("temperature", params["temperature"], np.float32))
            inputs.append(_tensor("runtime_top_p", params["top_p"], np.float32))
            if params["seed"] is not None:
                inputs.append(_tensor("random_seed", int(params["seed"]) % (1 << 64), np.uint64))
        return pb_utils.InferenceRequest(
            model_name=self.engine, inputs=inputs, requested_output_names=["output_ids", "sequence_length"]
        )

    def _response(self, text: str, n_in: int, n_out: int, finish: str) -> Any:
        return self.tg.text_response(text, n_in, n_out, finish)

    def _generate(self, prompt: str, stream: bool, params: dict[str, Any], sender: Any) -> None:
        ids = [int(t) for t in self.tokenizer(prompt)["input_ids"]]
        n_in = len(ids)
        if self.context and n_in + 1 > self.context:
            raise self.tg.SamplingError(f"text_input: {n_in} tokens, the model's context is {self.context}")
        max_new = min(params["max_tokens"], self.context - n_in) if self.context else params["max_tokens"]
        run = _Run(self, sender, stream, self.tg._StopMatcher(params["stop"]), n_in)
        responses = self._engine_request(ids, max_new, params).exec(decoupled=True)
        for resp in responses:
            if resp.has_error():
                raise RuntimeError(f"{self.engine}: {resp.error().message()}")
            if run.feed(resp):
                cancel = getattr(responses, "cancel", None)
                if cancel is not None:  # newer python backends cancel the BLS request
                    cancel()
                break
        if run.finish == "cancelled":
            sender.send(flags=FINAL)
            return
        if run.finish == "":
            run.finish = "length" if len(run.out) >= max_new else "stop"
        sender.send(self._response(run.rest(), n_in, len(run.out), run.finish), flags=FINAL)

    def finalize(self) -> None:
        with self.lock:
            threads = list(self.threads)
        for th in threads:
            th.join(timeout=5)


class _Run:
    """The state of one generation: tokens received, text sent, and why it ended."""

    def __init__(self, model: TritonPythonModel, sender: Any, stream: bool, matcher: Any, n_in: int) -> None:
        self.model = model
        self.n_in = n_in
        self.sender = sender
        self.stream = stream
        self.matcher = matcher
        self.out: list[int] = []  # every generated token, the end token included (as counted)
        self.text = ""
        self.sent = ""
        self.finish = ""

    def feed(self, resp: Any) -> bool:
        """Take one engine response; True when the generation is over (stop, end, cancelled)."""
        if self.sender.is_cancelled():
            self.finish = "cancelled"
            return True
        t = pb_utils.get_output_tensor_by_name(resp, "output_ids")
        if t is None:  # e.g. an empty final response
            return False
        new = [int(x) for x in t.as_numpy().reshape(-1)]
        self.out.extend(new)
        end = self.model.end_id in new
        tokens = [x for x in self.out if x != self.model.end_id]
        self.text = str(self.model.tokenizer.decode(tokens, skip_special_tokens=True))
        cut = self.matcher.cut(self.text)
        if cut is not None:
            self.text, self.finish = self.text[:cut], "stop"
            return True
        if end:
            self.finish = "stop"
            return True
        hold = self.matcher.hold
        ready = (self.text[: len(self.text) - hold] if hold else self.text).rstrip("\ufffd")
        if self.stream and len(ready) > len(self.sent) and ready.startswith(self.sent):
            self.sender.send(self.model._response(ready[len(self.sent) :], self.n_in, len(self.out), ""))
            self.sent = ready
        return False

    def rest(self) -> str:
        """The text not streamed yet (all of it when not streaming)."""
        return self.text[len(self.sent) :] if self.stream and self.text.startswith(self.sent) else self.text
