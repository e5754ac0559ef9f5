"""Issue #13: a ``tensorrtllm`` model behind the OpenAI-compatible endpoint.

``mdctl package --format tensorrtllm --tokenizer DIR`` packages a prebuilt engine with the model's
tokenizer; the agent lays out the text front ``<name>`` (our decoupled python-backend model,
trtllm_text_backend.py: tokenize, stream the engine through BLS, detokenize) and the engine entry
``<name>-engine`` (Triton's TensorRT-LLM backend). This Triton has no TensorRT-LLM backend (and no
GPU), so the engine entry is replaced by a **stand-in**: a small python-backend model, written
below and NOT part of the code under test, that declares the TensorRT-LLM backend's inputs and
outputs (names, data types, shapes, optional flags, batched, decoupled) and behaves like it for
what the front uses: token ids in, greedy decoding (``runtime_top_k`` 1) or seeded sampling, one
response per token when ``streaming``, the last one flagged final, stopping at ``end_id`` (which it
returns, as the backend does) or after ``request_output_len`` tokens. It generates with the same
tiny random GPT-2. Everything else is real: the packaging CLI, the agent, tritonserver, the text
front, the endpoint (uvicorn) and the official ``openai`` client.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from modeldeploy_runtime.ports import free_port

from .test_llm_serving import Stack, _metric, _up, _wait, concurrent_streams
from .test_llm_serving import reference as reference  # the transformers.generate oracle

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.slow]

MODEL = "tiny-trt"
ENGINE = "tiny-trt-engine"

#: The TensorRT-LLM backend's tensors the stand-in declares (inflight_batcher_llm/tensorrt_llm's
#: config.pbtxt as documented by tensorrtllm_backend; the batch dimension is implicit).
STAND_IN_INPUTS = [
    ("input_ids", "TYPE_INT32", [-1], False),
    ("input_lengths", "TYPE_INT32", [1], False),
    ("request_output_len", "TYPE_INT32", [1], False),
    ("end_id", "TYPE_INT32", [1], True),
    ("pad_id", "TYPE_INT32", [1], True),
    ("streaming", "TYPE_BOOL", [1], True),
    ("temperature", "TYPE_FP32", [1], True),
    ("runtime_top_k", "TYPE_INT32", [1], True),
    ("runtime_top_p", "TYPE_FP32", [1], True),
    ("random_seed", "TYPE_UINT64", [1], True),
    ("exclude_input_in_output", "TYPE_BOOL", [1], True),
]
STAND_IN_OUTPUTS = [("output_ids", "TYPE_INT32", [-1, -1]), ("sequence_length", "TYPE_INT32", [-1])]

STAND_IN_MODEL = '''
"""Stand-in for Triton's TensorRT-LLM backend (C++), for tests only: same tensors, same streaming."""
import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModelForCausalLM

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _get(request, name, default=None):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else t.as_numpy().reshape(-1)


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)
        cfg = json.loads(args["model_config"])
        path = cfg["parameters"]["hf_dir"]["string_value"]
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self.generate(request, sender)
            except Exception as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(repr(exc))), flags=FINAL)
        return None

    def response(self, tokens):
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("output_ids", np.array(tokens, dtype=np.int32).reshape(1, 1, -1)),
            pb_utils.Tensor("sequence_length", np.array([len(tokens)], dtype=np.int32).reshape(1, 1)),
        ])

    def generate(self, request, sender):
        n = int(_get(request, "input_lengths")[0])
        prompt = [int(x) for x in _get(request, "input_ids")[:n]]
        max_new = int(_get(request, "request_output_len")[0])
        end_id = _get(request, "end_id")
        end_id = None if end_id is None else int(end_id[0])
        streaming = bool(_get(request, "streaming", [False])[0])
        exclude = bool(_get(request, "exclude_input_in_output", [False])[0])
        top_k = _get(request, "runtime_top_k")
        temperature = _get(request, "temperature")
        greedy = temperature is None or (top_k is not None and int(top_k[0]) == 1)
        gen = None
        if not greedy:
            gen = torch.Generator()
            seed = _get(request, "random_seed")
            gen.manual_seed(int(seed[0]) if seed is not None else 0)
        ids = list(prompt)
        out = []
        for i in range(max_new):
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            if greedy:
                token = int(torch.argmax(logits).item())
            else:
                probs = torch.softmax(logits / float(temperature[0]), dim=-1)
                token = int(torch.multinomial(probs, 1, generator=gen).item())
            ids.append(token)
            out.append(token)
            last = token == end_id or i == max_new - 1
            if streaming:
                sender.send(self.response([token]), flags=FINAL if last else 0)
            if token == end_id:
                break
        if not streaming:
            sender.send(self.response(out if exclude else prompt + out), flags=FINAL)
'''


@dataclass
class TrtStack(Stack):
    agent: Any = None  # the agent that laid out the pod repository, pointed at this Triton


def _stand_in_config(hf_dir: Path, max_batch_size: int) -> str:
    def tensor(kind: str, name: str, dtype: str, dims: list[int], optional: bool = False) -> str:
        opt = "  optional: true\n" if optional else ""
        return f'{kind} {{\n  name: "{name}"\n  data_type: {dtype}\n  dims: [ {", ".join(map(str, dims))} ]\n{opt}}}\n'

    return (
        f'name: "{ENGINE}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        + "".join(tensor("input", *t) for t in STAND_IN_INPUTS)
        + "".join(tensor("output", *t) for t in STAND_IN_OUTPUTS)
        + "instance_group {\n  count: 1\n  kind: KIND_CPU\n}\n"
        + "model_transaction_policy {\n  decoupled: true\n}\n"
        + f'parameters {{\n  key: "hf_dir"\n  value: {{ string_value: "{hf_dir}" }}\n}}\n'
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrtStack]:
    from modeldeploy.cli import main
    from modeldeploy_runtime.agent import Agent, TritonAPI
    from modeldeploy_runtime.config import parse_config
    from modeldeploy_runtime.manifest import ManifestModel, ManifestVersion, ModelManifest
    from modeldeploy_runtime.tiny_lm import build_tiny_lm
    from modeldeploy_runtime.triton import TritonServer

    root = tmp_path_factory.mktemp("trtllm")
    hf = build_tiny_lm(root / "tiny-hf")
    engine = root / "engine"  # what trtllm-build writes: rank files + the build configuration
    engine.mkdir()
    (engine / "rank0.engine").write_bytes(b"\0" * 4096)
    (engine / "config.json").write_text(
        json.dumps({"build_config": {"max_batch_size": 4, "max_seq_len": 1024}})
    )
    store = root / "store"
    argv = ["package", str(engine), "-r", str(store), "-n", MODEL, "--format", "tensorrtllm",
            "--tokenizer", str(hf), "--no-progress", "--json"]  # fmt: skip
    with contextlib.redirect_stdout(None):
        assert main(argv) == 0
    # the agent lays out the pod's repository from the manifest, as in a pod (init mode)
    vdir = store / MODEL / "1"
    digest = (vdir / "manifest.sha256").read_bytes()
    import hashlib

    manifest = ModelManifest(
        models=[ManifestModel(name=MODEL, format="tensorrtllm", versions=[
            ManifestVersion(version=1, source=f"file://{vdir}", sha256=hashlib.sha256(digest).hexdigest())])]
    )  # fmt: skip
    pod = root / "pod"
    agent = Agent(root / "unused.json", pod)
    assert agent.fill_repository(manifest)
    # the engine entry the agent wrote declares exactly what the stand-in (the backend) takes
    ours, problems = parse_config((pod / ENGINE / "config.pbtxt").read_text())
    assert problems == [] and ours.backend == "tensorrtllm" and ours.decoupled
    assert [(t.name, t.data_type, t.dims, t.optional) for t in ours.inputs] == [
        (n, d, dims, o) for n, d, dims, o in STAND_IN_INPUTS
    ]
    assert [(t.name, t.data_type, t.dims) for t in ours.outputs] == STAND_IN_OUTPUTS
    # swap in the stand-in for the C++ backend
    (pod / ENGINE / "config.pbtxt").write_text(_stand_in_config(hf, ours.max_batch_size))
    (pod / ENGINE / "1" / "model.py").write_text(STAND_IN_MODEL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    srv = TritonServer(
        pod, load_models=[ENGINE, MODEL], log_path=root / "tritonserver.log", exit_timeout_secs=1
    )
    srv.start()
    port = free_port()
    log = open(root / "openai.log", "wb")  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy_runtime.cli", "openai", "--repository", str(pod),
         "--triton-grpc", srv.grpc_address, "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    agent.triton = TritonAPI(srv.http_url)
    agent.manifest = manifest
    try:
        _wait(lambda: _up(url + "/v1/models"), 120, "the OpenAI endpoint", proc)
        warm = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
        r = requests.post(url + "/v1/completions", json=warm, timeout=120)
        assert r.status_code == 200, r.text
        yield TrtStack(hf, srv, url, agent)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
        log.close()
        srv.stop()


def _successes(stack: Stack, model: str) -> float:
    text = requests.get(stack.triton.metrics_url, timeout=5).text
    return _metric(text, "nv_inference_request_success", model)


def test_models_lists_the_front_and_each_request_goes_through_the_engine(stack: Stack) -> None:
    assert [m.id for m in stack.client().models.list().data] == [MODEL]
    front, engine = _successes(stack, MODEL), _successes(stack, ENGINE)
    assert front >= 1 and engine >= 1  # the warm-up request
    stack.client().completions.create(model=MODEL, prompt="hi", max_tokens=3, temperature=0)
    _wait(lambda: _successes(stack, ENGINE) == engine + 1, 10, "the engine's success counter")
    assert _successes(stack, MODEL) == front + 1


@pytest.mark.parametrize("prompt", ["hello world", "the quick brown fox"])
def test_greedy_completion_equals_transformers_generate(stack: Stack, reference: Any, prompt: str) -> None:
    want, n_prompt, n_new = reference(prompt, 24)
    res = stack.client().completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
    assert res.choices[0].text == want
    assert (res.usage.prompt_tokens, res.usage.completion_tokens) == (n_prompt, n_new)
    assert res.choices[0].finish_reason == ("length" if n_new == 24 else "stop")


def test_greedy_chat_completion_equals_transformers_generate(stack: Stack, reference: Any) -> None:
    messages = [{"role": "user", "content": "what is the capital of france?"}]
    prompt = reference.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    want, n_prompt, n_new = reference(prompt, 20)
    res = stack.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert res.choices[0].message.content == want
    assert (res.usage.prompt_tokens, res.usage.completion_tokens) == (n_prompt, n_new)


def test_streaming_is_incremental_and_equals_the_full_answer(stack: Stack, reference: Any) -> None:
    want, _, n_new = reference("hello world", 40)
    assert n_new > 3, "the reference generation is too short to show streaming"
    client = stack.client()
    chunks: list[str] = []
    stream = client.completions.create(
        model=MODEL, prompt="hello world", max_tokens=40, temperature=0, stream=True
    )
    for ev in stream:
        if ev.choices and ev.choices[0].text:
            chunks.append(ev.choices[0].text)
    assert len(chunks) > 1
    assert "".join(chunks) == want
    full = client.completions.create(model=MODEL, prompt="hello world", max_tokens=40, temperature=0)
    assert full.choices[0].text == "".join(chunks)


def test_max_tokens_and_stop(stack: Stack, reference: Any) -> None:
    client = stack.client()
    want, _, n_new = reference("hello world", 5)
    res = client.completions.create(model=MODEL, prompt="hello world", max_tokens=5, temperature=0)
    assert res.choices[0].text == want and res.usage.completion_tokens == n_new <= 5
    greedy, _, _ = reference("hello world", 24)
    assert len(greedy) > 2
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 2]
    for streaming in (False, True):
        kw: dict[str, Any] = {"model": MODEL, "prompt": "hello world", "max_tokens": 24, "temperature": 0}
        if streaming:
            text = "".join(
                ev.choices[0].text
                for ev in client.completions.create(stop=[stop], stream=True, **kw)
                if ev.choices
            )
        else:
            res = client.completions.create(stop=[stop], **kw)
            text = res.choices[0].text
            assert res.choices[0].finish_reason == "stop"
        assert text == greedy[: greedy.index(stop)], streaming


def test_seeded_sampling_reaches_the_engine(stack: Stack) -> None:
    client = stack.client()
    kw: dict[str, Any] = {
        "model": MODEL,
        "prompt": "hello",
        "max_tokens": 20,
        "temperature": 1.5,
        "top_p": 0.9,
    }
    a = client.completions.create(seed=7, **kw).choices[0].text
    assert client.completions.create(seed=7, **kw).choices[0].text == a
    others = {client.completions.create(seed=s, **kw).choices[0].text for s in (8, 9, 10)}
    assert others - {a}, "different seeds all gave the seed-7 text"


def test_the_pod_serves_only_while_the_engine_does(stack: TrtStack) -> None:
    """The agent's serving/ready checks (the pod's probes) need the engine entry too: a front
    without its engine cannot generate."""
    agent = stack.agent
    assert agent.serving() == (True, [])
    assert agent.triton.unload(ENGINE) is None
    try:
        _wait(lambda: not agent.serving()[0], 30, "the pod to stop serving")
        assert agent.serving() == (False, [ENGINE])
        assert f"{ENGINE}/1" in agent.ready()[1]
    finally:
        assert agent.triton.load(ENGINE) is None
    assert agent.serving() == (True, [])
    res = stack.client().completions.create(model=MODEL, prompt="hi", max_tokens=3, temperature=0)
    assert res.choices[0].text


def test_concurrent_streams_through_the_front_are_correct(stack: TrtStack, reference: Any) -> None:
    """Each request runs on its own thread of the front, each with its own BLS stream."""
    prompts = [f"hello world {i}" for i in range(8)]
    wants = {p: reference(p, 12)[0] for p in prompts}
    assert concurrent_streams(stack.client, MODEL, prompts, 12) == wants


def test_an_engine_that_fails_to_load_is_reported_and_the_old_one_keeps_serving(stack: TrtStack) -> None:
    """The agent re-writes ``<name>-engine`` as the TensorRT-LLM backend's model, which this Triton
    lacks: the reload fails, the agent says so naming the engine entry, and Triton keeps serving
    the previous (stand-in) engine, so generation goes on. Runs last: it restores the stand-in."""
    agent = stack.agent
    pod = agent.repository
    saved = (pod / ENGINE / "config.pbtxt").read_text()
    try:
        agent.sync_model(agent.manifest.models[0])
        assert "tiny-trt-engine: " in (agent.last_error or ""), agent.last_error
        assert "tensorrtllm" in agent.last_error
        assert agent.serving() == (True, [])
        res = stack.client().completions.create(model=MODEL, prompt="hi", max_tokens=3, temperature=0)
        assert res.choices[0].text
    finally:
        (pod / ENGINE / "config.pbtxt").write_text(saved)
        assert agent.triton.load(ENGINE) is None
