"""Issue #13: a tiny random-weight causal LM (built locally, no hub) packaged with ``mdctl package``,
served by the real tritonserver's python backend (transformers, decoupled, streaming) behind the
OpenAI-compatible endpoint (a real uvicorn process), called with the official ``openai`` client."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from modeldeploy_runtime.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.slow]

MODEL = "tiny-lm"


@dataclass
class Stack:
    hf_dir: Path
    triton: Any
    url: str  # the OpenAI endpoint, http://127.0.0.1:PORT

    def client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _wait(cond: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from modeldeploy_runtime.tiny_lm import build_tiny_lm
    from modeldeploy_runtime.triton import TritonServer

    root = tmp_path_factory.mktemp("llm")
    hf = build_tiny_lm(root / "tiny-hf")
    repo = root / "repo"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "package", str(hf), "-r", str(repo), "-n", MODEL, "--no-progress"],
        check=True, env=env,
    )  # fmt: skip
    # one torch thread per generation (16 run at once on 2 cores); the server's stubs inherit it
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELDEPLOY_MODEL_THREADS", "1")
        srv = TritonServer(repo, load_models=[MODEL], log_path=root / "tritonserver.log", exit_timeout_secs=1)
        srv.start()
    port = free_port()
    log = open(root / "openai.log", "wb")  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy_runtime.cli", "openai", "--repository", str(repo),
         "--triton-grpc", srv.grpc_address, "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _up(url + "/v1/models"), 120, "the OpenAI endpoint", proc)
        # warm-up: the endpoint loads the tokenizer on the first request of a model
        warm = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
        assert requests.post(url + "/v1/completions", json=warm, timeout=120).status_code == 200
        yield Stack(hf, srv, url)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
        log.close()
        srv.stop()


@pytest.fixture(scope="module")
def reference(stack: Stack) -> Any:
    """transformers' own greedy ``generate`` on the same model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stack.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(stack.hf_dir).eval()

    def generate(prompt: str, max_new_tokens: int) -> tuple[str, int, int]:
        import torch

        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(ids, do_sample=False, max_new_tokens=max_new_tokens)
        new = out[0, ids.shape[1] :].tolist()
        eos = model.generation_config.eos_token_id
        n = len(new)
        if new and new[-1] == eos:
            new = new[:-1]
        return tok.decode(new, skip_special_tokens=True), ids.shape[1], n

    generate.tokenizer = tok  # type: ignore[attr-defined]
    return generate


def _metric(text: str, name: str, model: str = MODEL) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# -------------------------------------------------------------------------------------- correctness
def test_models_lists_the_packaged_llm(stack: Stack) -> None:
    models = stack.client().models.list()
    assert [m.id for m in models.data] == [MODEL]


@pytest.mark.parametrize("prompt", ["hello world", "the quick brown fox"])
def test_greedy_completion_equals_transformers_generate(stack: Stack, reference: Any, prompt: str) -> None:
    want, n_prompt, n_new = reference(prompt, 24)
    res = stack.client().completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
    assert res.choices[0].text == want
    assert res.usage.prompt_tokens == n_prompt
    assert res.usage.completion_tokens == n_new
    assert res.choices[0].finish_reason == ("length" if n_new == 24 else "stop")


def test_greedy_chat_completion_equals_transformers_generate(stack: Stack, reference: Any) -> None:
    messages = [{"role": "user", "content": "what is the capital of france?"}]
    prompt = reference.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    want, n_prompt, n_new = reference(prompt, 20)
    res = stack.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert res.choices[0].message.role == "assistant"
    assert res.choices[0].message.content == want
    assert (res.usage.prompt_tokens, res.usage.completion_tokens) == (n_prompt, n_new)


def test_streaming_is_incremental_and_equals_the_full_answer(stack: Stack, reference: Any) -> None:
    want, _, n_new = reference("hello world", 40)
    assert n_new > 3, "the reference generation is too short to show streaming"
    client = stack.client()
    chunks: list[str] = []
    finish = None
    stream = client.completions.create(
        model=MODEL, prompt="hello world", max_tokens=40, temperature=0, stream=True
    )
    for ev in stream:
        if ev.choices and ev.choices[0].text:
            chunks.append(ev.choices[0].text)
        if ev.choices and ev.choices[0].finish_reason:
            finish = ev.choices[0].finish_reason
    assert len(chunks) > 1
    assert "".join(chunks) == want
    assert finish in ("stop", "length")
    full = client.completions.create(model=MODEL, prompt="hello world", max_tokens=40, temperature=0)
    assert full.choices[0].text == "".join(chunks)


def test_raw_sse_has_done_and_first_chunk_before_the_last_token(stack: Stack) -> None:
    """The first event arrives while the model still generates: the time between the first and
    the last event is a real part of the whole generation."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.monotonic()
    times: list[float] = []
    lines: list[str] = []
    with requests.post(stack.url + "/v1/chat/completions", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line:
                lines.append(line)
                times.append(time.monotonic() - t0)
    assert lines[-1] == "data: [DONE]"
    assert all(x.startswith("data: ") for x in lines)
    content = [x for x in lines if '"content": "' in x and '"content": ""' not in x]
    assert len(content) > 1
    assert '"usage": {"prompt_tokens"' in lines[-2]
    assert times[0] < times[-1] / 2, f"first event at {times[0]:.3f}s, last at {times[-1]:.3f}s"


def test_sampling_is_reproducible_with_a_seed_and_honours_stop(stack: Stack, reference: Any) -> None:
    client = stack.client()
    kw: dict[str, Any] = {
        "model": MODEL,
        "prompt": "hello",
        "max_tokens": 30,
        "temperature": 1.5,
        "top_p": 0.9,
    }
    a = client.completions.create(seed=7, **kw).choices[0].text
    b = client.completions.create(seed=7, **kw).choices[0].text
    assert a == b
    others = {client.completions.create(seed=s, **kw).choices[0].text for s in (8, 9, 10)}
    assert others - {a}, "different seeds all gave the seed-7 text"
    greedy, _, _ = reference("hello world", 24)
    assert len(greedy) > 2
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 2]
    res = client.completions.create(
        model=MODEL, prompt="hello world", max_tokens=24, temperature=0, stop=[stop]
    )
    assert res.choices[0].text == greedy[: greedy.index(stop)]
    assert res.choices[0].finish_reason == "stop"


# -------------------------------------------------------------------------------------- concurrency
def concurrent_streams(client: Any, model: str, prompts: list[str], max_tokens: int) -> dict[str, str]:
    """Each prompt streamed greedily by its own client thread, all at once: prompt -> text."""

    def run(p: str) -> str:
        stream = client().completions.create(
            model=model, prompt=p, max_tokens=max_tokens, temperature=0, stream=True
        )
        return "".join(ev.choices[0].text for ev in stream if ev.choices)

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        return dict(zip(prompts, pool.map(run, prompts), strict=True))


def test_sixteen_concurrent_streams_complete_correctly(stack: Stack, reference: Any) -> None:
    prompts = [f"hello world {i}" for i in range(16)]
    wants = {p: reference(p, 16)[0] for p in prompts}
    assert concurrent_streams(stack.client, MODEL, prompts, 16) == wants


def test_client_disconnect_stops_the_generation(stack: Stack) -> None:
    metrics_url = stack.triton.metrics_url
    before = _metric(requests.get(metrics_url, timeout=5).text, "modeldeploy_llm_generated_tokens_total")
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 1000, "temperature": 0, "stream": True}
    with requests.post(stack.url + "/v1/completions", json=body, stream=True, timeout=60) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line).startswith(b"data: ")
    # the client is gone: the model stops generating well before max_tokens
    _wait(
        lambda: _metric(requests.get(metrics_url, timeout=5).text, "modeldeploy_llm_generations_active") == 0,
        30, "the generation to stop",
    )  # fmt: skip
    generated = (
        _metric(requests.get(metrics_url, timeout=5).text, "modeldeploy_llm_generated_tokens_total") - before
    )
    assert 0 < generated < 1000
    ours = requests.get(stack.url + "/metrics", timeout=5).text
    assert _metric(ours, "modeldeploy_openai_cancelled_total") >= 1
    assert _metric(ours, "modeldeploy_openai_requests_in_flight") == 0
    assert _metric(ours, "modeldeploy_openai_time_to_first_token_seconds_count") >= 1
    assert _metric(ours, "modeldeploy_openai_inter_token_latency_seconds_count") >= 1
    assert _metric(ours, "modeldeploy_openai_completion_tokens_total") >= 1


# ------------------------------------------------------------------------------------------- errors
def _error(r: requests.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return dict(err)


def test_unknown_model_is_404_model_not_found(stack: Stack) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as exc:
        stack.client().completions.create(model="nope", prompt="hi", max_tokens=2)
    assert exc.value.code == "model_not_found"
    err = _error(
        requests.post(stack.url + "/v1/chat/completions", json={"model": "nope", "messages": []}, timeout=10),
        404,
    )
    assert err["param"] == "model"


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", -1), ("temperature", 5), ("top_p", 0), ("stop", ["a"] * 5), ("seed", "x")],
)
def test_bad_parameter_is_400_naming_it(stack: Stack, field: str, value: Any) -> None:
    body = {"model": MODEL, "prompt": "hi", field: value}
    err = _error(requests.post(stack.url + "/v1/completions", json=body, timeout=10), 400)
    assert err["param"] == field and err["type"] == "invalid_request_error"
    assert field in err["message"]


def test_prompt_longer_than_the_context_is_400(stack: Stack) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as exc:
        stack.client().completions.create(model=MODEL, prompt="hello world " * 2000, max_tokens=4)
    assert exc.value.code == "context_length_exceeded"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello world " * 2000}]}
    err = _error(requests.post(stack.url + "/v1/chat/completions", json=body, timeout=30), 400)
    assert err["param"] == "messages" and re.search(r"maximum context length is \d+", err["message"])


def test_malformed_json_is_400(stack: Stack) -> None:
    r = requests.post(
        stack.url + "/v1/completions", data=b'{"model": "tiny-lm", "prompt": ', timeout=10,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    err = _error(r, 400)
    assert err["code"] == "invalid_json"
    ours = requests.get(stack.url + "/metrics", timeout=5).text
    assert 'modeldeploy_openai_requests_total{endpoint="completions",model="",status="400"}' in ours
