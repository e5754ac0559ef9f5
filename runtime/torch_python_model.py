"""Triton python-backend model that serves a TorchScript file (``model.pt``) through torch.

``mdctl package --backend python`` copies this file as ``<version>/model.py`` next to ``model.pt``,
so a TorchScript model runs on a Triton that has only the python backend (e.g. the tritonserver in
nvidia-pytriton). Inputs and outputs are taken from the model configuration in their declared
order. Requests of one batch (dynamic batching) are concatenated along the batch dimension and run
as a single forward pass, then split again per request. With a ``KIND_GPU`` instance and CUDA
available the model runs on that instance's device.

This file runs inside the python-backend stub: it imports only torch, numpy and
triton_python_backend_utils.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.input_names = [t["name"] for t in config.get("input", [])]
        self.output_names = [t["name"] for t in config.get("output", [])]
        self.output_dtypes = [
            pb_utils.triton_string_to_numpy(t["data_type"]) for t in config.get("output", [])
        ]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        kind = args.get("model_instance_kind", "CPU")
        if kind == "GPU" and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{int(args.get('model_instance_device_id', '0'))}")
        else:
            self.device = torch.device("cpu")
        threads = os.environ.get("MODELDEPLOY_TORCH_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.model = torch.jit.load(path, map_location=self.device)
        self.model.eval()

    def _forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
        with torch.inference_mode():
            out: Any = self.model(*tensors)
        outs = list(out) if isinstance(out, tuple | list) else [out]
        if len(outs) != len(self.output_names):
            raise pb_utils.TritonModelException(
                f"model returned {len(outs)} outputs, config declares {len(self.output_names)}"
            )
        return [
            o.detach().cpu().numpy().astype(dt, copy=False)
            for o, dt in zip(outs, self.output_dtypes, strict=True)
        ]

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
