"""Triton python-backend model that serves a TorchScript (``model.pt``) or ONNX (``model.onnx``) file.

``mdctl package --backend python`` copies this file as ``<version>/model.py`` next to the artifact,
so a TorchScript or ONNX model runs on a Triton that has only the python backend (e.g. the
tritonserver in nvidia-pytriton): TorchScript through torch, ONNX through onnxruntime. Inputs and
outputs are taken from the model configuration in their declared order. Requests of one batch
(dynamic batching) are concatenated along the batch dimension and run as a single forward pass,
then split again per request. With a ``KIND_GPU`` instance and CUDA available the model runs on that
instance's device (torch: ``cuda:<id>``; onnxruntime: the CUDA execution provider).

This file runs inside the python-backend stub: it imports only numpy, triton_python_backend_utils
and the framework its artifact needs (torch or onnxruntime), nothing from modeldeploy.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

#: Artifacts this wrapper can serve, in the order they are looked for in the version folder.
ARTIFACTS = ("model.pt", "model.onnx")


def _threads() -> int | None:
    threads = os.environ.get("MODELDEPLOY_MODEL_THREADS") or os.environ.get("MODELDEPLOY_TORCH_THREADS")
    return int(threads) if threads else None


class _TorchScript:
    def __init__(self, path: str, gpu: int | None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu")
        threads = _threads()
        if threads:
            torch.set_num_threads(threads)
        self.model = torch.jit.load(path, map_location=self.device)
        self.model.eval()

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
        with torch.inference_mode():
            out: Any = self.model(*tensors)
        outs = list(out) if isinstance(out, tuple | list) else [out]
        return [o.detach().cpu().numpy() for o in outs]


class _Onnx:
    def __init__(self, path: str, gpu: int | None, input_names: list[str], output_names: list[str]) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        threads = _threads()
        if threads:
            opts.intra_op_num_threads = threads
        providers: list[Any] = ["CPUExecutionProvider"]
        if gpu is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu}))
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        self.input_names = input_names
        self.output_names = output_names

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        feeds = dict(zip(self.input_names, inputs, strict=True))
        return list(self.session.run(self.output_names, feeds))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.input_names = [t["name"] for t in config.get("input", [])]
        self.output_names = [t["name"] for t in config.get("output", [])]
        self.output_dtypes = [
            pb_utils.triton_string_to_numpy(t["data_type"]) for t in config.get("output", [])
        ]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        gpu = (
            int(args.get("model_instance_device_id", "0"))
            if args.get("model_instance_kind", "CPU") == "GPU"
            else None
        )
        folder = os.path.join(args["model_repository"], args["model_version"])
        found = [a for a in ARTIFACTS if os.path.isfile(os.path.join(folder, a))]
        if not found:
            raise pb_utils.TritonModelException(f"{folder}: none of {', '.join(ARTIFACTS)} found")
        path = os.path.join(folder, found[0])
        if path.endswith(".onnx"):
            self.model: Any = _Onnx(path, gpu, self.input_names, self.output_names)
        else:
            self.model = _TorchScript(path, gpu)

    def _forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.model(inputs)
        if len(outs) != len(self.output_names):
            raise pb_utils.TritonModelException(
                f"model returned {len(outs)} outputs, config declares {len(self.output_names)}"
            )
        return [o.astype(dt, copy=False) for o, dt in zip(outs, self.output_dtypes, strict=True)]

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [
            [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names] for r in requests
        ]
        if self.batching and len(requests) > 1:
            sizes = [a[0].shape[0] for a in arrays]
            merged = [np.concatenate([a[i] for a in arrays], axis=0) for i in range(len(self.input_names))]
            try:
                outs = self._forward(merged)
            except Exception as exc:  # the whole batch fails the same way
                err = pb_utils.TritonError(f"inference failed: {exc}")
                return [pb_utils.InferenceResponse(error=err) for _ in requests]
            responses = []
            start = 0
            for n in sizes:
                tensors = [
                    pb_utils.Tensor(name, o[start : start + n])
                    for name, o in zip(self.output_names, outs, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
                start += n
            return responses
        responses = []
        for a in arrays:
            try:
                outs = self._forward(a)
                tensors = [pb_utils.Tensor(name, o) for name, o in zip(self.output_names, outs, strict=True)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"inference failed: {exc}"))
                )
        return responses

    def finalize(self) -> None:
        self.model = None
