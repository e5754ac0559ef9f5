"""Read the graph inputs/outputs of an ONNX file without the onnx package.

An ONNX model is a protobuf ``ModelProto``; this walks just enough of the wire format
(graph=7; GraphProto input=11, output=12, initializer=5; ValueInfoProto name=1, type=2;
TypeProto tensor_type=1; Tensor elem_type=1, shape=2; TensorShapeProto dim=1; Dimension
dim_value=1, dim_param=2) to get names, element types and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ONNX TensorProto.DataType -> Triton data type
ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
    13: "TYPE_UINT64", 16: "TYPE_BF16",
}  # fmt: skip


class OnnxParseError(ValueError):
    pass


@dataclass
class OnnxTensor:
    name: str
    data_type: str
    dims: list[int]  # -1 for symbolic / unknown dimensions


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise OnnxParseError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    out: list[tuple[int, int, bytes | int]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
            out.append((num, wt, v))
        elif wt == 1:
            out.append((num, wt, buf[i : i + 8]))
            i += 8
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise OnnxParseError("truncated length-delimited field")
            out.append((num, wt, buf[i : i + n]))
            i += n
        elif wt == 5:
            out.append((num, wt, buf[i : i + 4]))
            i += 4
        else:
            raise OnnxParseError(f"unsupported wire type {wt}")
    return out


def _value_info(buf: bytes) -> OnnxTensor:
    name, elem, dims = "", 0, []
    for num, _, v in _fields(buf):
        if num == 1 and isinstance(v, bytes):
            name = v.decode()
        elif num == 2 and isinstance(v, bytes):
            for tnum, _, tv in _fields(v):
                if tnum == 1 and isinstance(tv, bytes):  # tensor_type
                    for f, _, x in _fields(tv):
                        if f == 1 and isinstance(x, int):
                            elem = x
                        elif f == 2 and isinstance(x, bytes):
                            for dn, _, dv in _fields(x):
                                if dn == 1 and isinstance(dv, bytes):
                                    d = -1
                                    for a, _, b in _fields(dv):
                                        if a == 1 and isinstance(b, int):
                                            d = b
                                    dims.append(d)
    if elem not in ONNX_TO_TRITON:
        raise OnnxParseError(f"tensor {name!r}: unsupported ONNX element type {elem}")
    return OnnxTensor(name, ONNX_TO_TRITON[elem], dims)


def read_io(path: Path) -> tuple[list[OnnxTensor], list[OnnxTensor]]:
    """(inputs, outputs) of the ONNX graph, initializers excluded; errors name the file."""
    try:
        data = path.read_bytes()
        graph = next((v for n, _, v in _fields(data) if n == 7 and isinstance(v, bytes)), None)
        if graph is None:
            raise OnnxParseError("no graph in the file (is it an ONNX model?)")
        inits: set[str] = set()
        ins: list[OnnxTensor] = []
        outs: list[OnnxTensor] = []
        for n, _, v in _fields(graph):
            if not isinstance(v, bytes):
                continue
            if n == 5:
                for f, _, x in _fields(v):
                    if f == 8 and isinstance(x, bytes):
                        inits.add(x.decode())
            elif n == 11:
                ins.append(_value_info(v))
            elif n == 12:
                outs.append(_value_info(v))
    except (OnnxParseError, UnicodeDecodeError) as exc:
        raise OnnxParseError(f"{path}: not a readable ONNX model: {exc}") from exc
    ins = [t for t in ins if t.name not in inits]
    if not ins or not outs:
        raise OnnxParseError(f"{path}: the ONNX graph declares no inputs or no outputs")
    return ins, outs


def _key(num: int, wt: int) -> bytes:
    return _enc_varint(num << 3 | wt)


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _enc_varint(len(payload)) + payload


def encode_io_only(inputs: list[OnnxTensor], outputs: list[OnnxTensor]) -> bytes:
    """A ModelProto holding only a graph's inputs/outputs (for tests of the reader and lint)."""
    rev = {v: k for k, v in ONNX_TO_TRITON.items()}

    def vi(t: OnnxTensor) -> bytes:
        dims = b"".join(
            _ld(1, _key(2, 2) + _enc_varint(1) + b"N" if d < 0 else _key(1, 0) + _enc_varint(d))
            for d in t.dims
        )
        tensor = _key(1, 0) + _enc_varint(rev[t.data_type]) + _ld(2, dims)
        return _ld(1, t.name.encode()) + _ld(2, _ld(1, tensor))

    graph = b"".join(_ld(11, vi(t)) for t in inputs) + b"".join(_ld(12, vi(t)) for t in outputs)
    return _key(1, 0) + _enc_varint(8) + _ld(7, graph)
