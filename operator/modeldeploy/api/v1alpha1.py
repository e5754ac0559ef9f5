"""The ModelDeployment API, ``modeldeploy.io/v1alpha1``.

These pydantic models are the single source of truth for the API:

* ``mdctl crd`` generates ``crds/modeldeploy.io_modeldeployments.yaml`` from them (descriptions,
  defaults, enums, bounds and the CEL ``x-kubernetes-validations`` rules), so the API server rejects
  invalid objects at ``kubectl apply`` time;
* the operator parses ``spec`` with the same models (:meth:`ModelDeployment.from_body`), so the
  operator and the API server agree on what is valid. Every cross-field CEL rule has a Python twin
  (see :class:`Rule`) that raises the same message.

Field names are camelCase, exactly as they appear in YAML. Dump with :func:`dump` (or
``model_dump(mode="json", exclude_none=True)``) to get the shape the CRD accepts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from modeldeploy import __version__
from modeldeploy_runtime.manifest import FORMATS, ModelFormat, select_versions

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
LIST_KIND = "ModelDeploymentList"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md", "mdep")
CATEGORIES = ("all", "modeldeploy")
CRD_NAME = f"{PLURAL}.{GROUP}"

#: Pinned Triton image used when spec.server.image is empty (override: env MODELDEPLOY_TRITON_IMAGE).
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.06-py3"
#: Runtime agent image used when spec.runtime.image is empty (override: env MODELDEPLOY_RUNTIME_IMAGE).
DEFAULT_RUNTIME_IMAGE = f"ghcr.io/modeldeploy/runtime:{__version__}"
#: Runtime image of pods serving an LLM format (the agent plus the ``llm`` extra for the
#: OpenAI-compatible endpoint; docker/runtime-llm.Dockerfile), used when spec.runtime.image is empty
#: (override: env MODELDEPLOY_RUNTIME_LLM_IMAGE).
DEFAULT_RUNTIME_LLM_IMAGE = f"ghcr.io/modeldeploy/runtime-llm:{__version__}"
TRITON_IMAGE_ENV = "MODELDEPLOY_TRITON_IMAGE"
RUNTIME_IMAGE_ENV = "MODELDEPLOY_RUNTIME_IMAGE"
RUNTIME_LLM_IMAGE_ENV = "MODELDEPLOY_RUNTIME_LLM_IMAGE"

#: Port of the runtime agent (``modeldeploy-runtime agent --port``) in every Triton pod.
AGENT_PORT = 8080
#: Port of the OpenAI-compatible endpoint container in pods that serve an LLM (issue #13).
OPENAI_PORT = 9000
#: Start-up budget per byte of LLM weights on top of startupTimeoutSeconds: fetching and loading at
#: 100 MB/s or better (a 140 GB model gets 1400 s more).
STARTUP_SECONDS_PER_BYTE = 1 / 100e6
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
#: metadata.name: a DNS-1035 label short enough for the derived object names (<name>-models, ...).
MAX_NAME_LENGTH = 50
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MESSAGE = (
    f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters (lowercase letters, "
    "digits and '-', starting with a letter): it names the Service, Deployment and ConfigMap"
)
#: Label prefix reserved for the operator's own labels (selectors).
RESERVED_LABEL_PREFIX = "modeldeploy.io/"

#: Large-language-model formats: decoupled (streaming) Triton models that batch inside their engine,
#: served with the OpenAI-compatible endpoint (issue #13).
LLM_FORMATS: tuple[str, ...] = ("transformers", "vllm", "tensorrtllm")
#: LLM formats whose engine needs GPUs (transformers also runs on CPU).
GPU_LLM_FORMATS: tuple[str, ...] = ("vllm", "tensorrtllm")
#: Most GPUs a node offers: a tensor-parallel engine runs in one pod, so on one node.
MAX_GPUS_PER_NODE = 8
VersionState = Literal["Pending", "Loading", "Ready", "Failed", "Unloaded"]
ConditionType = Literal["Ready", "ModelsReady", "Progressing", "Degraded"]
CONDITION_TYPES: tuple[str, ...] = ("Ready", "ModelsReady", "Progressing", "Degraded")


# --------------------------------------------------------------------------------------------------
# Regular expressions (RE2- and Rust-regex-compatible: no look-around, no backreferences). The API
# server matches them with RE2 over the whole value; Python checks them with :func:`full_match`
# (``re.match`` with ``$`` would accept a trailing newline) and pydantic's ``pattern`` uses Rust's
# regex crate, where ``$`` is the end of the text as in RE2. Classes are spelt out in ASCII: ``\s``
# is ASCII whitespace in RE2 but Unicode whitespace in Python and Rust.
# --------------------------------------------------------------------------------------------------
#: RE2's ``\s`` (ASCII whitespace), spelt out so that every engine reads it the same way.
_NOT_SLASH_OR_SPACE = r"[^/\t\n\f\r ]"
TRITON_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A non-negative quantity string (a pattern needs no CEL), with a decimal exponent of at most two
#: digits: the API server scales such a value to render and compare it, and ``1e99999999`` in a Pod
#: spec would cost it minutes; no resource needs a larger exponent.
UNSIGNED_QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$"
)
#: A quantity string that CEL rules compare: Kubernetes' resource.Quantity form (as in
#: controller-gen generated CRDs, signed), but a decimal exponent has at most two digits. Comparing quantities scales them to one exponent, so ``1e99999999`` makes the API
#: server's CEL evaluation run for minutes (a generated parity case found it); no size needs more.
CEL_QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$"
)
PERCENT_OR_INT_PATTERN = r"^(100|[1-9]?[0-9])%$"
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
MIG_PROFILE_PATTERN = r"^[1-7]g[.][0-9]+gb([.]me)?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
#: Allowed model source URIs. Used verbatim in CEL (single-quoted) and in Python.
SOURCE_PATTERN = (
    r"^(s3://[a-z0-9][-a-z0-9.]*[a-z0-9](/.*)?|gs://[a-z0-9][-a-z0-9._]*[a-z0-9](/.*)?"
    r"|https?://" + _NOT_SLASH_OR_SPACE + r"+(/.*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|file:///.*)$"
)
HTTP_URL_PATTERN = r"^https?://" + _NOT_SLASH_OR_SPACE + r"+(/.*)?$"
SOURCE_MESSAGE = (
    "must be a URI with scheme s3://<bucket>/<path>, gs://<bucket>/<path>, https://, http://, "
    "pvc://<claim>/<path> or file:///<path>"
)
TRITON_NAME_MESSAGE = (
    "must be a valid Triton model name: letters, digits, '_', '.' and '-', starting with a letter or digit"
)

# Triton's tensor data types (model_config.proto DataType).
TensorDataType = Literal[
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
]


# --------------------------------------------------------------------------------------------------
# CEL rules with Python twins
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One cross-field validation rule.

    ``cel`` goes into the CRD's ``x-kubernetes-validations`` of the object it is attached to;
    ``check`` is the same rule in Python (``None`` for transition rules that need ``oldSelf``), run by
    pydantic when the operator parses an object. Both report ``message``; ``field_path`` (relative,
    e.g. ``.minReplicas``) tells the API server which field to blame.
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None = None
    field_path: str | None = None
    reason: str | None = None  # FieldValueInvalid (default) | FieldValueForbidden | FieldValueRequired

    @property
    def python_only(self) -> bool:
        """Rules the API server enforces by other means (e.g. list-map key uniqueness)."""
        return not self.cel

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def _cel_field(*rules: tuple[str, str]) -> dict[str, Any]:
    """json_schema_extra for a field-level CEL rule list ``[(rule, message), ...]``."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Base(BaseModel):
    """Base for all API objects: unknown fields are errors (the API server prunes them anyway)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_default=False, use_attribute_docstrings=False
    )

    #: Cross-field rules of this object (CEL in the CRD, Python in the operator).
    __rules__: ClassVar[tuple[Rule, ...]] = ()
    #: Cross-field rules the CRD cannot express (CEL cannot read a number-or-string
    #: :data:`Quantity`). Not part of admission, so the parser stays exactly as strict as the API
    #: server; :func:`operator_rule_errors` checks them before rendering and the operator reports
    #: a broken one as Ready=False/InvalidSpec naming the field. ``cel`` is unused (``""``).
    __operator_rules__: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.__rules__:
            rules = [r.to_crd() for r in cls.__rules__ if not r.python_only]
            if rules:
                target["x-kubernetes-validations"] = rules
        return schema

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        """A declared field set to ``null`` is absent, as the API server prunes nulls of
        non-nullable fields (after rejecting unknown fields, which stay errors here too)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in cls.model_fields}
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> Any:
        _check_unique_lists(self)
        for rule in type(self).__rules__:
            if rule.check is not None and not rule.check(self):
                raise PydanticCustomError(
                    "rule",
                    "{message}",
                    {"message": rule.message, "field_path": rule.field_path or ""},
                )
        return self


def operator_rule_errors(obj: BaseModel, path: str = "spec") -> list[tuple[str, str]]:
    """``(field, message)`` for each broken :attr:`_Base.__operator_rules__` rule in ``obj`` and
    the objects it holds, ``field`` being a full path such as ``spec.resources.requests.cpu``."""
    out: list[tuple[str, str]] = []
    for rule in getattr(type(obj), "__operator_rules__", ()):
        if rule.check is not None and not rule.check(obj):
            out.append((path + (rule.field_path or ""), rule.message))
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            out += operator_rule_errors(value, f"{path}.{name}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out += operator_rule_errors(item, f"{path}.{name}[{i}]")
    return out


def _check_unique_lists(obj: BaseModel) -> None:
    """The API server's uniqueness rules, read from the same schema annotations it gets:
    ``x-kubernetes-list-type: set`` (unique items) and ``map`` (unique ``x-kubernetes-list-map-keys``).
    Reports the first duplicate as the API server does: ``<list>[i]: Duplicate value: ...``."""
    for name, field in type(obj).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind = extra.get("x-kubernetes-list-type")
        items = getattr(obj, name)
        if kind not in ("set", "map") or not items:
            continue
        map_keys = extra.get("x-kubernetes-list-map-keys")
        keys = [str(k) for k in map_keys] if isinstance(map_keys, list) else []
        seen: set[Any] = set()
        for i, item in enumerate(items):
            key = item if kind == "set" else tuple(getattr(item, k) for k in keys)
            if key in seen:
                shown = (
                    key if kind == "set" else ", ".join(f"{k}: {v!r}" for k, v in zip(keys, key, strict=True))
                )
                raise PydanticCustomError(
                    "duplicate",
                    "{message}",
                    {"message": f"Duplicate value: {shown}", "field_path": f".{name}[{i}]"},
                )
            seen.add(key)


# --------------------------------------------------------------------------------------------------
# Reusable field types
# --------------------------------------------------------------------------------------------------
def full_match(pattern: str, value: str) -> bool:
    """``value`` matches ``pattern`` as the API server's RE2 ``pattern``/``matches()`` do: the
    whole string, so a trailing newline is not swallowed by ``$``."""
    return re.fullmatch(pattern, value) is not None


def _check_source(v: str) -> str:
    if not full_match(SOURCE_PATTERN, v):
        raise ValueError(SOURCE_MESSAGE)
    return v


def _check_triton_name(v: str) -> str:
    if not full_match(TRITON_NAME_PATTERN, v):
        raise ValueError(TRITON_NAME_MESSAGE)
    return v


SourceURI = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        json_schema_extra=_cel_field((f"self.matches(r'{SOURCE_PATTERN}')", SOURCE_MESSAGE)),
    ),
    AfterValidator(_check_source),
]
TritonName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        json_schema_extra=_cel_field((f"self.matches(r'{TRITON_NAME_PATTERN}')", TRITON_NAME_MESSAGE)),
    ),
    AfterValidator(_check_triton_name),
]
DNSSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
DNSLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]


QUANTITY_MESSAGE = (
    "must be a non-negative quantity: a number such as 0.5 or 1073741824, or a string such as "
    "500m, 0.5 or 8Gi"
)
INT_OR_STRING_QUANTITY_MESSAGE = (
    "must be a non-negative quantity: an integer such as 2 or 1073741824, or a string such as "
    "500m, '0.5' or 8Gi (quote fractional numbers)"
)
#: Marks a CRD schema node that stays untyped: a scalar whose JSON type the node's own value
#: validations decide (api/crd.py keeps it without ``type`` and drops the marker).
UNTYPED_SCALAR = "x-modeldeploy-untyped-scalar"


def _quantity(v: Any) -> int | float | str:
    """A non-negative Kubernetes quantity, as in Pod specs: a plain number (``0.5``,
    ``1073741824``) or a quantity string (``500m``, ``8Gi``), exactly what the CRD's untyped
    node admits: ``minimum: 0`` for numbers, the unsigned quantity pattern for strings, and no
    other JSON type."""
    if isinstance(v, bool):
        raise ValueError(QUANTITY_MESSAGE)
    if isinstance(v, int | float) and math.isfinite(v) and v >= 0:
        return v
    if isinstance(v, str) and len(v) <= 64 and full_match(UNSIGNED_QUANTITY_PATTERN, v):
        return v
    raise ValueError(QUANTITY_MESSAGE)


def _int_or_string_quantity(v: Any) -> int | str:
    """A non-negative quantity for fields that CEL rules compare (they need a type CEL can read,
    and a structural schema has no "number or string" type CEL can read): an integer, or a
    quantity string. A fractional plain number (``0.5``) is refused as the CRD's int-or-string
    schema refuses it."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and len(v) <= 64 and full_match(CEL_QUANTITY_PATTERN, v) and parse_quantity(v) >= 0:
        return v
    raise ValueError(INT_OR_STRING_QUANTITY_MESSAGE)


def _int_or_percent(v: Any) -> int | str:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1000:
        return v
    if isinstance(v, str) and full_match(PERCENT_OR_INT_PATTERN, v):
        return v
    raise ValueError("must be a non-negative integer (at most 1000) or a percentage such as 25%")


#: CEL twin of the sign check of :func:`_int_or_string_quantity` (the pattern checks the form).


def cel_quantity_ok(expr: str) -> str:
    """CEL: ``expr`` (int-or-string) is a quantity of CEL_QUANTITY_PATTERN's form. The API server runs
    CEL rules even on a value its pattern refused, so every rule that compares quantities starts
    with this guard (the pattern's own error names the field), never with an unbounded exponent."""
    return f"string({expr}).matches(r'{CEL_QUANTITY_PATTERN}')"


QUANTITY_CEL = f"!{cel_quantity_ok('self')} || !quantity(string(self)).isLessThan(quantity('0'))"
#: A non-negative Kubernetes quantity as in Pod specs: a number (``0.5``, ``1073741824``) or a
#: string such as ``500m`` or ``8Gi``. A structural schema cannot type a node "number or string"
#: (``x-kubernetes-int-or-string`` has no fractions), so the node is untyped and its value
#: validations each apply to one JSON type: ``minimum`` to numbers, ``pattern``/``maxLength`` to
#: strings, contradictory property/item counts refuse objects and lists, ``not enum`` refuses
#: booleans; the API server prunes a null. CEL cannot read an untyped node, so rules comparing
#: these quantities are operator-time checks (:attr:`_Base.__operator_rules__`).
Quantity = Annotated[
    int | float | str,
    PlainValidator(_quantity),
    WithJsonSchema(
        {
            UNTYPED_SCALAR: True,
            "x-kubernetes-preserve-unknown-fields": True,
            "pattern": UNSIGNED_QUANTITY_PATTERN,
            "maxLength": 64,
            "minimum": 0,
            "minProperties": 1,
            "maxProperties": 0,
            "minItems": 1,
            "maxItems": 0,
            "not": {"enum": [True, False]},
        }
    ),
]
#: A non-negative quantity that CEL rules read: an integer or a quantity string
#: (int-or-string in the CRD, as controller-gen renders resource.Quantity).
IntOrStringQuantity = Annotated[
    int | str,
    PlainValidator(_int_or_string_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "pattern": CEL_QUANTITY_PATTERN,
            "maxLength": 64,
            "x-kubernetes-validations": [{"rule": QUANTITY_CEL, "message": INT_OR_STRING_QUANTITY_MESSAGE}],
        }
    ),
]
#: An integer count or a percentage string such as ``25%`` (int-or-string in the CRD).
IntOrPercent = Annotated[
    int | str,
    PlainValidator(_int_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "pattern": PERCENT_OR_INT_PATTERN,
            "maxLength": 4,
            "minimum": 0,
            "maximum": 1000,
        }
    ),
]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
#: A label key (a qualified name): ``[prefix/]name``, prefix a DNS subdomain, name as a label value.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_KEY_MESSAGE = (
    "label keys must be qualified names: an optional DNS subdomain prefix and '/', then at most 63 "
    "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)


def _label_key_ok(k: str) -> bool:
    return len(k) <= 316 and full_match(LABEL_KEY_PATTERN, k) and len(k.partition("/")[0]) <= 253


def _check_label_keys(v: dict[str, str]) -> dict[str, str]:
    if not all(_label_key_ok(k) for k in v):
        raise ValueError(LABEL_KEY_MESSAGE)
    return v


LabelKey = Annotated[str, Field(min_length=1, max_length=316, pattern=LABEL_KEY_PATTERN)]
_KEYS_CEL = (
    f"self.all(k, k.matches(r'{LABEL_KEY_PATTERN}') && k.split('/')[0].size() <= 253)",
    LABEL_KEY_MESSAGE,
)


def _drop_null_values(v: Any) -> Any:
    """A map entry whose value is ``null`` is absent, as the API server prunes it."""
    return {k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else v


LabelMap = Annotated[
    dict[str, LabelValue],
    Field(max_length=64, json_schema_extra=_cel_field(_KEYS_CEL)),
    BeforeValidator(_drop_null_values),
    AfterValidator(_check_label_keys),
]
AnnotationMap = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]],
    Field(max_length=64, json_schema_extra=_cel_field(_KEYS_CEL)),
    BeforeValidator(_drop_null_values),
    AfterValidator(_check_label_keys),
]


_QUANTITY_SUFFIX: dict[str, Decimal] = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(q: int | float | str) -> Decimal:
    """A Kubernetes quantity as a Decimal (``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824, ``0.5`` -> 0.5)."""
    if isinstance(q, int):
        return Decimal(q)
    if isinstance(q, float):
        return Decimal(repr(q))
    m = re.fullmatch(r"([+-]?[0-9.]+)([eE][+-]?[0-9.]+)?([KMGTPE]i|[numkMGTPE])?", q.strip())
    if not m:
        raise ValueError(f"invalid quantity {q!r}")
    try:
        number = Decimal(m.group(1) + (m.group(2) or ""))
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {q!r}") from exc
    return number * _QUANTITY_SUFFIX[m.group(3) or ""]


def _qle(a: int | float | str | None, b: int | float | str | None) -> bool:
    return a is None or b is None or parse_quantity(a) <= parse_quantity(b)


def quantity_string(q: int | float | str) -> str:
    """A quantity as the string a Pod spec carries: ``0.5`` -> ``"0.5"``, ``1073741824`` ->
    ``"1073741824"``, ``"500m"`` as it is (the API server canonicalises each, e.g. to ``500m``).
    A float is written by ``repr`` (``1e-07``: a valid quantity exponent form); ``-0.0`` as ``0.0``."""
    if isinstance(q, float):
        return repr(abs(q))
    return str(q)


def _is_zero(v: int | str) -> bool:
    return str(v) in ("0", "0%")


# --------------------------------------------------------------------------------------------------
# spec.models
# --------------------------------------------------------------------------------------------------
class ModelVersion(_Base):
    """One version of a model (a numbered folder in Triton's model repository)."""

    version: int = Field(
        ge=1,
        le=2147483647,
        description="Version number (positive, unique within the model): the folder name in Triton's model repository.",
    )
    source: SourceURI | None = Field(
        default=None,
        description=(
            "Where this version's artifacts live; overrides the model's source (which otherwise "
            "resolves to <model source>/<version>). Schemes: s3://, gs://, https://, http://, "
            "pvc://<claim>/<path>, file:///<path>. Points at a version folder or a single artifact file."
        ),
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        max_length=64,
        description="Expected sha256 (64 lowercase hex digits) of the artifact; the pod refuses to load on mismatch.",
    )


class VersionPolicy(_Base):
    """Which of the declared versions Triton serves, as Triton's version_policy: set exactly one field."""

    __rules__ = (
        Rule(
            "[has(self.latest), has(self.all), has(self.specific)].filter(x, x).size() == 1",
            "versionPolicy must set exactly one of latest, all or specific",
            lambda s: [s.latest is not None, s.all is not None, s.specific is not None].count(True) == 1,
        ),
        Rule(
            "!has(self.all) || self.all",
            "versionPolicy.all must be true when set (use latest or specific otherwise)",
            lambda s: s.all is None or s.all,
            field_path=".all",
        ),
    )

    latest: int | None = Field(
        default=None, ge=1, le=64, description="Serve the N highest declared version numbers."
    )
    all: bool | None = Field(default=None, description="Serve every declared version.")
    specific: list[Annotated[int, Field(ge=1, le=2147483647)]] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Serve exactly these version numbers; each must be declared in versions.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class DynamicBatching(_Base):
    """Triton dynamic batching: requests are combined into batches server-side."""

    preferredBatchSizes: list[Annotated[int, Field(ge=1, le=1048576)]] | None = Field(
        default=None,
        max_length=16,
        description="Batch sizes the batcher tries to form (each <= maxBatchSize).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    maxQueueDelayMicroseconds: int = Field(
        default=0,
        ge=0,
        le=60_000_000,
        description="How long a request may wait in the queue for a batch to fill, in microseconds.",
    )


class InstanceGroup(_Base):
    """A group of model instances (Triton instance_group)."""

    count: int = Field(default=1, ge=1, le=64, description="Number of model instances in this group.")
    kind: Literal["GPU", "CPU", "AUTO"] = Field(
        default="AUTO",
        description="Where the instances run: GPU, CPU, or AUTO (GPU when the pod has one).",
    )


class Tensor(_Base):
    """An input or output tensor, for formats whose configuration Triton cannot infer (e.g. pytorch)."""

    name: str = Field(min_length=1, max_length=128, description="Tensor name as the model sees it.")
    dataType: TensorDataType = Field(description="Triton data type, e.g. TYPE_FP32.")
    dims: list[Annotated[int, Field(ge=-1, le=1 << 30)]] = Field(
        min_length=0,
        max_length=16,
        description="Shape without the batch dimension; -1 for a variable-size dimension.",
    )


class Credentials(_Base):
    """Storage credentials: a Secret in the same namespace, exposed only to the model-fetching agent.

    S3: keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (optionally AWS_SESSION_TOKEN); GCS: key
    service-account.json; HTTPS: key token (sent as a bearer token)."""

    secretName: DNSSubdomain = Field(description="Name of the Secret holding the credentials.")
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="S3-compatible endpoint URL, e.g. http://minio.storage:9000.",
    )
    region: str | None = Field(default=None, max_length=64, description="S3 region.")


class KeyReference(_Base):
    """One key of a ConfigMap or a Secret in the ModelDeployment's namespace (set exactly one of
    configMapName, secretName): mounted read-only into the model-fetching agent, never read by the
    operator."""

    __rules__ = (
        Rule(
            "has(self.configMapName) != has(self.secretName)",
            "set exactly one of configMapName or secretName",
            lambda s: (s.configMapName is None) != (s.secretName is None),
        ),
    )

    configMapName: DNSSubdomain | None = Field(default=None, description="ConfigMap holding the key.")
    secretName: DNSSubdomain | None = Field(default=None, description="Secret holding the key.")
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The data key (a PEM file)."
    )


class SignatureVerification(_Base):
    """Signed-model policy (OpenSSF model signing, verified offline by the agent before a version is
    published into the pod's repository): a trusted public key, or a certificate chain plus the
    identity the signer's certificate must carry."""

    __rules__ = (
        Rule(
            "has(self.publicKey) != has(self.certificateChain)",
            "verification must set exactly one of publicKey or certificateChain",
            lambda s: (s.publicKey is None) != (s.certificateChain is None),
        ),
        Rule(
            "!has(self.certificateChain) || has(self.identity)",
            "verification.identity is required with certificateChain",
            lambda s: s.certificateChain is None or s.identity is not None,
            field_path=".identity",
            reason="FieldValueRequired",
        ),
    )

    required: bool = Field(
        default=True,
        description=(
            "true: an unsigned version fails (SignatureMissing); false: unsigned versions are served, "
            "signed ones must still verify."
        ),
    )
    publicKey: KeyReference | None = Field(default=None, description="Trusted PEM public key (EC).")
    certificateChain: KeyReference | None = Field(
        default=None, description="Trusted PEM certificate chain (root last)."
    )
    identity: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="With certificateChain: a subject alternative name (or the subject) the signer's certificate carries.",
    )


_LLM_FORMATS_CEL = "[" + ", ".join(f"'{f}'" for f in LLM_FORMATS) + "]"


class LLMSpec(_Base):
    """Engine settings of a large language model (formats transformers, vllm, tensorrtllm)."""

    tensorParallelSize: int | None = Field(
        default=None,
        ge=1,
        le=MAX_GPUS_PER_NODE,
        description=(
            "GPUs one engine spans (vLLM tensor_parallel_size). Default: every GPU of the pod "
            "(resources.gpu). Must divide resources.gpu: the pod's GPUs are on one node."
        ),
    )
    gpuMemoryUtilization: float | None = Field(
        default=None,
        ge=0.01,
        le=1,
        description="Fraction of each GPU's memory the engine may use, 0.01 to 1 (vLLM).",
    )
    maxModelLen: int | None = Field(
        default=None, ge=1, le=10485760, description="Context length in tokens (vLLM max_model_len)."
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] | None = Field(
        default=None, description="Weights/activations dtype (vLLM dtype). Default: auto."
    )
    weightsSize: Quantity | None = Field(
        default=None,
        description=(
            "Approximate size of the weights, e.g. 140Gi: the pods' start-up budget grows by one second "
            "per 100 MB on top of server.startupTimeoutSeconds, so a large model is not killed while it loads."
        ),
    )


class ModelSpec(_Base):
    """A model served by the Triton pods of this deployment."""

    __rules__ = (
        Rule(
            "has(self.source) || self.versions.all(v, has(v.source))",
            "source is required on the model or on every version",
            lambda s: s.source is not None or all(v.source is not None for v in s.versions),
            field_path=".source",
            reason="FieldValueRequired",
        ),
        Rule(
            "!has(self.versionPolicy) || !has(self.versionPolicy.specific) || "
            "self.versionPolicy.specific.all(n, self.versions.exists(v, v.version == n))",
            "versionPolicy.specific may only list versions declared in versions",
            lambda s: (
                s.versionPolicy.specific is None
                or set(s.versionPolicy.specific) <= {v.version for v in s.versions}
            ),
            field_path=".versionPolicy.specific",
        ),
        Rule(
            "!has(self.dynamicBatching) || (has(self.maxBatchSize) && self.maxBatchSize > 0)",
            "dynamicBatching requires maxBatchSize > 0 (maxBatchSize: 0 means the model does not batch)",
            lambda s: s.dynamicBatching is None or s.maxBatchSize > 0,
            field_path=".dynamicBatching",
            reason="FieldValueForbidden",
        ),
        Rule(
            "!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSizes) || "
            "!has(self.maxBatchSize) || self.dynamicBatching.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
            "dynamicBatching.preferredBatchSizes must not exceed maxBatchSize",
            lambda s: (
                s.dynamicBatching is None
                or not s.dynamicBatching.preferredBatchSizes
                or max(s.dynamicBatching.preferredBatchSizes) <= s.maxBatchSize
            ),
            field_path=".dynamicBatching.preferredBatchSizes",
        ),
        Rule(
            f"!(self.format in {_LLM_FORMATS_CEL}) || !has(self.dynamicBatching)",
            "dynamicBatching does not apply to the decoupled LLM formats (transformers, vllm, tensorrtllm): "
            "their engine batches requests in flight",
            lambda s: s.format not in LLM_FORMATS or s.dynamicBatching is None,
            field_path=".dynamicBatching",
            reason="FieldValueForbidden",
        ),
        Rule(
            "!(self.format in ['transformers', 'vllm']) || !has(self.maxBatchSize) || self.maxBatchSize == 0",
            "maxBatchSize must be 0 for formats transformers and vllm: a decoupled model takes one request "
            "at a time and the engine batches tokens itself",
            lambda s: s.format not in ("transformers", "vllm") or s.maxBatchSize == 0,
            field_path=".maxBatchSize",
            reason="FieldValueForbidden",
        ),
        Rule(
            f"!has(self.llm) || self.format in {_LLM_FORMATS_CEL}",
            "llm applies only to the formats transformers, vllm and tensorrtllm",
            lambda s: s.llm is None or s.format in LLM_FORMATS,
            field_path=".llm",
            reason="FieldValueForbidden",
        ),
    )

    name: TritonName = Field(description="Triton model name (unique within the deployment).")
    format: ModelFormat = Field(
        description=(
            "Model format, which selects the Triton backend: pytorch (TorchScript, backend pytorch), "
            "onnx (onnxruntime), python (python backend, model.py), tensorrt (TensorRT plan). "
            "Immutable: serve a different format under a new model name."
        ),
        json_schema_extra=_cel_field(
            ("self == oldSelf", "format is immutable; serve the new format under a new model name")
        ),
    )
    source: SourceURI | None = Field(
        default=None,
        description=(
            "Base URI of the model's versions: version N is fetched from <source>/<N>/ unless the "
            "version sets its own source. Schemes: s3://, gs://, https://, http://, "
            "pvc://<claim>/<path>, file:///<path>."
        ),
    )
    credentials: Credentials | None = Field(
        default=None, description="Secret with credentials for the model's storage."
    )
    verification: SignatureVerification | None = Field(
        default=None,
        description="Verify each version's model signature before it is served (see SignatureVerification).",
    )
    versions: list[ModelVersion] = Field(
        min_length=1,
        max_length=32,
        description="The declared versions (unique version numbers).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["version"]},
    )
    versionPolicy: VersionPolicy = Field(
        default_factory=lambda: VersionPolicy(latest=1),
        description="Which declared versions Triton serves (Triton version_policy). Default: latest: 1.",
    )
    maxBatchSize: int = Field(
        default=0,
        ge=0,
        le=1048576,
        description="Triton max_batch_size; 0 means the model has no batch dimension (no batching).",
    )
    dynamicBatching: DynamicBatching | None = Field(
        default=None, description="Enable Triton dynamic batching (requires maxBatchSize > 0)."
    )
    instanceGroups: list[InstanceGroup] | None = Field(
        default=None,
        max_length=8,
        description="Triton instance groups (how many instances, on GPU or CPU). Default: Triton's.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    inputs: list[Tensor] | None = Field(
        default=None,
        max_length=64,
        description="Input tensors, when Triton cannot infer them (required by pytorch unless the artifact has a config.pbtxt).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    outputs: list[Tensor] | None = Field(
        default=None,
        max_length=64,
        description="Output tensors, when Triton cannot infer them.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    parameters: (
        Annotated[
            dict[str, Annotated[str, Field(max_length=1024)]],
            Field(max_length=32),
            BeforeValidator(_drop_null_values),
        ]
        | None
    ) = Field(default=None, description="Extra Triton model parameters (config.pbtxt parameters).")
    llm: LLMSpec | None = Field(
        default=None,
        description="Engine settings of a large language model (formats transformers, vllm, tensorrtllm).",
    )

    # ---- effective values -------------------------------------------------------------------
    def declared_versions(self) -> list[int]:
        return sorted(v.version for v in self.versions)

    def desired_versions(self) -> list[int]:
        """The versions Triton must serve under the version policy (Triton's semantics)."""
        p = self.versionPolicy
        return select_versions(self.declared_versions(), latest=p.latest, all=p.all, specific=p.specific)

    def version_source(self, version: int) -> str:
        """The effective source URI of one declared version."""
        for v in self.versions:
            if v.version == version:
                if v.source:
                    return v.source
                assert self.source is not None  # guaranteed by the rules
                return f"{self.source.rstrip('/')}/{version}"
        raise KeyError(f"model {self.name}: version {version} is not declared")

    def backend(self) -> str:
        return FORMATS[self.format].backend_name

    def is_llm(self) -> bool:
        return self.format in LLM_FORMATS

    def tensor_parallel_size(self, gpus: int) -> int:
        """The engine's tensor-parallel size: llm.tensorParallelSize, else every GPU of the pod."""
        if self.llm is not None and self.llm.tensorParallelSize is not None:
            return self.llm.tensorParallelSize
        return max(gpus, 1)


# --------------------------------------------------------------------------------------------------
# spec.server
# --------------------------------------------------------------------------------------------------
class ServerPorts(_Base):
    """Container ports of the Triton server."""

    __rules__ = (
        Rule(
            "self.http != self.grpc && self.http != self.metrics && self.grpc != self.metrics",
            "server ports http, grpc and metrics must be distinct",
            lambda s: len({s.http, s.grpc, s.metrics}) == 3,
        ),
        Rule(
            f"[self.http, self.grpc, self.metrics].all(p, p != {AGENT_PORT})",
            f"server ports must not use {AGENT_PORT}, the port of the modeldeploy runtime agent",
            lambda s: AGENT_PORT not in (s.http, s.grpc, s.metrics),
        ),
    )

    http: int = Field(default=8000, ge=1, le=65535, description="HTTP/REST (KServe v2) port.")
    grpc: int = Field(default=8001, ge=1, le=65535, description="gRPC port.")
    metrics: int = Field(default=8002, ge=1, le=65535, description="Prometheus metrics port.")


class EnvVar(_Base):
    """An environment variable with a literal value."""

    name: str = Field(
        min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name."
    )
    value: str = Field(default="", max_length=8192, description="Literal value.")


class LocalObjectReference(_Base):
    """A reference to an object in the same namespace."""

    name: DNSSubdomain = Field(description="Name of the referenced object.")


_MANAGED_ARGS = (
    "--model-repository",
    "--model-store",
    "--model-control-mode",
    "--load-model",
    "--strict-readiness",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
)

_ARGS_MESSAGE = "args must not set " + ", ".join(_MANAGED_ARGS) + " (managed by the operator)"


def _check_args(args: list[str]) -> list[str]:
    if any(a.startswith(_MANAGED_ARGS) for a in args):
        raise ValueError(_ARGS_MESSAGE)
    return args


class ServerSpec(_Base):
    """The Triton Inference Server container."""

    image: str | None = Field(
        default=None,
        max_length=512,
        description=(
            f"Triton image. Default: the operator's pinned image ({DEFAULT_TRITON_IMAGE}, or the "
            f"operator's {TRITON_IMAGE_ENV})."
        ),
    )
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of the Triton and agent containers."
    )
    imagePullSecrets: list[LocalObjectReference] | None = Field(
        default=None,
        max_length=16,
        description="Secrets for pulling the images.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    modelControlMode: Literal["explicit", "none"] = Field(
        default="explicit",
        description=(
            "Triton model control mode. explicit (default): the runtime agent loads and unloads "
            "versions through the repository API (needed for in-place rollouts). none: Triton loads "
            "the repository at start-up and never changes it."
        ),
    )
    args: Annotated[list[Annotated[str, Field(max_length=512)]], AfterValidator(_check_args)] | None = Field(
        default=None,
        max_length=32,
        description=(
            "Extra tritonserver arguments, e.g. --log-verbose=1. The model repository, control "
            "mode, readiness and port flags are managed by the operator and rejected here."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "atomic",
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(a, "
                    + " && ".join(f"!a.startsWith('{f}')" for f in _MANAGED_ARGS)
                    + ")",
                    "message": _ARGS_MESSAGE,
                }
            ],
        },
    )
    env: list[EnvVar] | None = Field(
        default=None,
        max_length=64,
        description="Extra environment variables of the Triton container.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    ports: ServerPorts = Field(default_factory=ServerPorts, description="Triton's ports.")
    sharedMemorySize: Quantity = Field(
        default="1Gi", description="Size of the memory-backed /dev/shm (python backend, shared-memory I/O)."
    )
    modelRepositorySizeLimit: Quantity | None = Field(
        default=None,
        description="sizeLimit of the emptyDir holding the model repository (/models). Default: unlimited.",
    )
    startupTimeoutSeconds: int = Field(
        default=600,
        ge=30,
        le=86400,
        description=(
            "Start-up budget: how long fetching and loading the models may take before the pod is "
            "considered failed (startup probe budget)."
        ),
    )

    def effective_image(self) -> str:
        return self.image or os.environ.get(TRITON_IMAGE_ENV) or DEFAULT_TRITON_IMAGE


# --------------------------------------------------------------------------------------------------
# spec.resources
# --------------------------------------------------------------------------------------------------
class ComputeResources(_Base):
    """CPU and memory amounts."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 0.5, 2 or 500m.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 8Gi or 1073741824.")


def _requests_le_limits(res: str) -> Rule:
    """requests <= limits (operator-time: CEL cannot read a number-or-string quantity; the
    Deployment's pod template would be refused by the API server)."""
    return Rule(
        "",
        f"requests.{res} must be less than or equal to limits.{res}",
        lambda s: (
            s.requests is None or s.limits is None or _qle(getattr(s.requests, res), getattr(s.limits, res))
        ),
        field_path=f".requests.{res}",
    )


class ContainerResources(_Base):
    """CPU/memory requests and limits of a container."""

    __operator_rules__ = (_requests_le_limits("cpu"), _requests_le_limits("memory"))

    requests: ComputeResources | None = Field(default=None, description="CPU/memory requests.")
    limits: ComputeResources | None = Field(default=None, description="CPU/memory limits.")


class MigSpec(_Base):
    """A MIG (Multi-Instance GPU) slice instead of whole GPUs: requests nvidia.com/mig-<profile>."""

    profile: str = Field(
        max_length=32,
        pattern=MIG_PROFILE_PATTERN,
        description="MIG profile, e.g. 1g.10gb or 3g.40gb (the resource nvidia.com/mig-<profile>).",
    )
    count: int = Field(default=1, ge=1, le=56, description="Number of MIG slices per pod.")


class ResourcesSpec(_Base):
    """Resources of each Triton pod (the Triton container)."""

    __rules__ = (
        Rule(
            "!(has(self.gpu) && self.gpu > 0 && has(self.mig))",
            "gpu and mig are mutually exclusive: set gpu for whole GPUs or mig for a MIG slice",
            lambda s: not (s.gpu > 0 and s.mig is not None),
            field_path=".mig",
            reason="FieldValueForbidden",
        ),
        Rule(
            "!has(self.gpuProduct) || (has(self.gpu) && self.gpu > 0) || has(self.mig)",
            "gpuProduct requires gpu > 0 or mig",
            lambda s: s.gpuProduct is None or s.gpu > 0 or s.mig is not None,
            field_path=".gpuProduct",
        ),
    )
    __operator_rules__ = (_requests_le_limits("cpu"), _requests_le_limits("memory"))

    requests: ComputeResources | None = Field(default=None, description="CPU/memory requests.")
    limits: ComputeResources | None = Field(default=None, description="CPU/memory limits.")
    gpu: int = Field(
        default=0, ge=0, le=16, description="Whole GPUs per pod (resource nvidia.com/gpu); 0 for CPU only."
    )
    gpuProduct: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description=f"Required GPU product: matches the node label {GPU_PRODUCT_LABEL}, e.g. NVIDIA-H100-80GB-HBM3.",
    )
    mig: MigSpec | None = Field(
        default=None, description="Request a MIG slice instead of whole GPUs (exclusive with gpu)."
    )

    def gpu_resource_name(self) -> str | None:
        """``nvidia.com/gpu``, ``nvidia.com/mig-<profile>``, or None without GPUs."""
        if self.mig is not None:
            return f"nvidia.com/mig-{self.mig.profile}"
        if self.gpu > 0:
            return GPU_RESOURCE
        return None

    def gpu_count(self) -> int:
        """How many units of :meth:`gpu_resource_name` each pod requests."""
        if self.mig is not None:
            return self.mig.count
        return self.gpu

    def uses_gpu(self) -> bool:
        return self.gpu_resource_name() is not None

    def gpu_summary(self) -> str:
        """Short text for status/printing: ``2``, ``1 x mig-1g.10gb`` or ``0``."""
        if self.mig is not None:
            return f"{self.mig.count} x mig-{self.mig.profile}"
        return str(self.gpu)


# --------------------------------------------------------------------------------------------------
# spec.scheduling
# --------------------------------------------------------------------------------------------------
_VALUES_RULES = (
    Rule(
        "self.operator in ['Exists', 'DoesNotExist'] ? !has(self.values) || size(self.values) == 0 : "
        "has(self.values) && size(self.values) > 0",
        "values must be empty for operators Exists and DoesNotExist and non-empty otherwise",
        lambda s: (not s.values) if s.operator in ("Exists", "DoesNotExist") else bool(s.values),
        field_path=".values",
    ),
)
SelectorValues = Annotated[list[LabelValue], Field(max_length=64)]


class LabelSelectorRequirement(_Base):
    """A label selector requirement (metav1.LabelSelectorRequirement)."""

    __rules__ = _VALUES_RULES

    key: LabelKey = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: SelectorValues | None = Field(
        default=None, description="Values for In and NotIn (non-empty); empty for Exists and DoesNotExist."
    )


class LabelSelector(_Base):
    """A label selector (metav1.LabelSelector): the requirements are ANDed."""

    matchLabels: LabelMap | None = Field(default=None, description="Labels that must match exactly.")
    matchExpressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        max_length=32,
        description="Label requirements.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


class NodeSelectorRequirement(_Base):
    """A node selector requirement (core/v1 NodeSelectorRequirement)."""

    __rules__ = (
        Rule(
            "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1 && "
            "self.values[0].matches('^-?[0-9]+$'))",
            "operators Gt and Lt need exactly one value, an integer",
            lambda s: (
                s.operator not in ("Gt", "Lt")
                or (s.values is not None and len(s.values) == 1 and full_match(r"-?[0-9]+", s.values[0]))
            ),
            field_path=".values",
        ),
        Rule(
            "self.operator in ['Gt', 'Lt'] || (self.operator in ['Exists', 'DoesNotExist'] ? "
            "!has(self.values) || size(self.values) == 0 : has(self.values) && size(self.values) > 0)",
            _VALUES_RULES[0].message,
            lambda s: s.operator in ("Gt", "Lt") or _VALUES_RULES[0].check(s),  # type: ignore[misc]
            field_path=".values",
        ),
    )

    key: LabelKey = Field(description="The node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: SelectorValues | None = Field(default=None, description="Values (see operator).")


class NodeFieldSelectorRequirement(_Base):
    """A node field selector requirement: only metadata.name, with In or NotIn and one value."""

    key: Literal["metadata.name"] = Field(description="The node field: metadata.name.")
    operator: Literal["In", "NotIn"] = Field(description="In or NotIn.")
    values: Annotated[list[DNSSubdomain], Field(min_length=1, max_length=1)] = Field(
        description="Exactly one node name."
    )


class NodeSelectorTerm(_Base):
    """A node selector term: its requirements are ANDed."""

    matchExpressions: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Node label requirements.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )  # fmt: skip
    matchFields: list[NodeFieldSelectorRequirement] | None = Field(
        default=None, max_length=8, description="Node field requirements.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )  # fmt: skip


class NodeSelector(_Base):
    """Node selector terms, ORed."""

    nodeSelectorTerms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=16, description="The terms (ORed).",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )  # fmt: skip


class PreferredSchedulingTerm(_Base):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    preference: NodeSelectorTerm = Field(description="The node selector term.")


class NodeAffinity(_Base):
    """Node affinity (core/v1 NodeAffinity)."""

    requiredDuringSchedulingIgnoredDuringExecution: NodeSelector | None = Field(
        default=None, description="Nodes the pods must run on."
    )
    preferredDuringSchedulingIgnoredDuringExecution: list[PreferredSchedulingTerm] | None = Field(
        default=None, max_length=16, description="Nodes the pods prefer.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )  # fmt: skip


class PodAffinityTerm(_Base):
    """Pods (selected by label) to be co-located with, or kept apart from, on a topology domain."""

    labelSelector: LabelSelector | None = Field(default=None, description="The pods to consider.")
    namespaceSelector: LabelSelector | None = Field(
        default=None, description="Namespaces to consider (by label); default: this namespace."
    )
    namespaces: list[DNSLabel] | None = Field(
        default=None, max_length=32, description="Namespaces to consider, by name.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )  # fmt: skip
    topologyKey: LabelKey = Field(
        description="Node label of the topology domain, e.g. kubernetes.io/hostname."
    )


class WeightedPodAffinityTerm(_Base):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    podAffinityTerm: PodAffinityTerm = Field(description="The pod affinity term.")


class PodAffinity(_Base):
    """Pod affinity or anti-affinity (core/v1 PodAffinity / PodAntiAffinity)."""

    requiredDuringSchedulingIgnoredDuringExecution: list[PodAffinityTerm] | None = Field(
        default=None, max_length=16, description="Terms that must hold.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )  # fmt: skip
    preferredDuringSchedulingIgnoredDuringExecution: list[WeightedPodAffinityTerm] | None = Field(
        default=None, max_length=16, description="Weighted preferences.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )  # fmt: skip


class Affinity(_Base):
    """Pod scheduling affinity (core/v1 Affinity), typed so that a misspelt key is an error at
    ``kubectl apply`` time."""

    nodeAffinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    podAffinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    podAntiAffinity: PodAffinity | None = Field(default=None, description="Pod anti-affinity.")


class Toleration(_Base):
    """A pod toleration (core/v1 Toleration)."""

    __rules__ = (
        Rule(
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "a toleration with operator Exists must not set value",
            lambda s: s.operator != "Exists" or not s.value,
            field_path=".value",
        ),
        Rule(
            "has(self.key) && self.key != '' || (has(self.operator) && self.operator == 'Exists')",
            "a toleration without key must use operator Exists",
            lambda s: bool(s.key) or s.operator == "Exists",
            field_path=".operator",
        ),
        Rule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds needs effect NoExecute",
            lambda s: s.tolerationSeconds is None or s.effect == "NoExecute",
            field_path=".effect",
        ),
    )

    key: str | None = Field(
        default=None,
        max_length=316,
        pattern=r"^(" + LABEL_KEY_PATTERN.strip("^$") + r")?$",
        description="Taint key (a qualified name); empty matches all keys.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default)."
    )
    value: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="Taint value for operator Equal.",
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    tolerationSeconds: int | None = Field(
        default=None,
        ge=-(2**63),
        le=2**63 - 1,
        description="For NoExecute: how long the pod stays bound after the taint appears.",
    )


class TopologySpreadConstraint(_Base):
    """How to spread the Triton pods (core/v1 TopologySpreadConstraint); the label selector defaults to
    the deployment's own pods."""

    __rules__ = (
        Rule(
            "!has(self.minDomains) || self.whenUnsatisfiable == 'DoNotSchedule'",
            "minDomains needs whenUnsatisfiable DoNotSchedule",
            lambda s: s.minDomains is None or s.whenUnsatisfiable == "DoNotSchedule",
            field_path=".minDomains",
        ),
    )

    maxSkew: int = Field(default=1, ge=1, le=1000, description="Maximum allowed skew between domains.")
    topologyKey: LabelKey = Field(description="Node label of the domain, e.g. topology.kubernetes.io/zone.")
    whenUnsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        default="DoNotSchedule", description="What to do when the constraint cannot be met."
    )
    minDomains: int | None = Field(
        default=None, ge=1, le=1000, description="Minimum number of eligible domains."
    )
    labelSelector: LabelSelector | None = Field(
        default=None, description="The pods to count. Default: this deployment's pods."
    )


class SchedulingSpec(_Base):
    """Where the Triton pods run. The NVIDIA GPU toleration (nvidia.com/gpu, NoSchedule) is added
    automatically when GPUs are requested."""

    nodeSelector: LabelMap | None = Field(default=None, description="Node labels the pods require.")
    tolerations: list[Toleration] | None = Field(
        default=None,
        max_length=32,
        description="Extra tolerations.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    affinity: Affinity | None = Field(
        default=None, description="A core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity)."
    )
    priorityClassName: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="PriorityClass of the pods."
    )
    topologySpreadConstraints: list[TopologySpreadConstraint] | None = Field(
        default=None,
        max_length=8,
        description="Topology spread constraints of the pods.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


# --------------------------------------------------------------------------------------------------
# spec.autoscaling
# --------------------------------------------------------------------------------------------------
MetricType = Literal[
    "cpu",
    "queueTime",
    "pendingRequests",
    "prometheus",
    "inFlightRequests",
    "timeToFirstToken",
    "kvCacheUsage",
]
#: Metric types read from the OpenAI-compatible endpoint of LLM pods (a model with an LLM format).
LLM_METRIC_TYPES: tuple[str, ...] = ("inFlightRequests", "timeToFirstToken")
#: autoscaling/v2 limit of behavior.scaleDown.stabilizationWindowSeconds.
HPA_MAX_WINDOW = 3600


class AutoscalingMetric(_Base):
    """The metric the replica count follows."""

    __rules__ = (
        Rule(
            "self.type != 'prometheus' || has(self.query)",
            "query is required when metric type is prometheus",
            lambda s: s.type != "prometheus" or s.query is not None,
            field_path=".query",
            reason="FieldValueRequired",
        ),
        Rule(
            "!has(self.query) || self.type == 'prometheus'",
            "query is only allowed when metric type is prometheus",
            lambda s: s.query is None or s.type == "prometheus",
            field_path=".query",
            reason="FieldValueForbidden",
        ),
        Rule(
            "self.type != 'cpu' || type(self.target) == int",
            "target for metric type cpu is an integer utilisation percentage (of the CPU request)",
            lambda s: s.type != "cpu" or isinstance(s.target, int),
            field_path=".target",
        ),
        Rule(
            "!has(self.metricName) || !(self.metricName in ['.', '..'])",
            "metricName must be a valid path segment: not '.' or '..', no '/' or '%'",
            lambda s: s.metricName not in (".", ".."),
            field_path=".metricName",
        ),
        Rule(
            f"!{cel_quantity_ok('self.target')} || quantity(string(self.target)).isGreaterThan(quantity('0'))",
            "target must be greater than 0",
            lambda s: parse_quantity(s.target) > 0,
            field_path=".target",
        ),
        Rule(
            f"self.type != 'kvCacheUsage' || !{cel_quantity_ok('self.target')} || "
            "!quantity(string(self.target)).isGreaterThan(quantity('1'))",
            "target for metric type kvCacheUsage is a fraction of the KV cache, at most 1 (e.g. 800m for 80%)",
            lambda s: s.type != "kvCacheUsage" or parse_quantity(s.target) <= 1,
            field_path=".target",
        ),
    )

    type: MetricType = Field(
        description=(
            "cpu: CPU utilisation; queueTime: Triton's average queue time per request "
            "(nv_inference_queue_duration_us / nv_inference_request_success); pendingRequests: "
            "Triton's pending requests per pod (nv_inference_pending_request_count); prometheus: a "
            "custom Prometheus query (keda mode). LLM formats: inFlightRequests: generations in "
            "progress per pod at the OpenAI endpoint (modeldeploy_openai_requests_in_flight); "
            "timeToFirstToken: average time to first token in seconds "
            "(modeldeploy_openai_time_to_first_token_seconds); kvCacheUsage (vllm): vLLM's KV-cache "
            "usage, 0 to 1 (vllm:gpu_cache_usage_perc)."
        )
    )
    target: IntOrStringQuantity = Field(
        description=(
            "Target value per pod: cpu: utilisation percent of the CPU request; queueTime: "
            "microseconds per request; pendingRequests: requests per pod; prometheus: the query's "
            "threshold value; inFlightRequests: generations per pod; timeToFirstToken: seconds "
            "(e.g. 500m); kvCacheUsage: fraction of the KV cache, at most 1 (e.g. 800m)."
        )
    )
    query: str | None = Field(
        default=None, min_length=1, max_length=4096, description="PromQL query (type prometheus only)."
    )
    metricName: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[^/%]+$",
        description=(
            "hpa mode, every type but cpu: name of the per-pod metric served by the custom metrics "
            "API (e.g. prometheus-adapter). Default: derived from the type."
        ),
    )


class AutoscalingSpec(_Base):
    """Horizontal autoscaling of the Triton pods: an autoscaling/v2 HorizontalPodAutoscaler (hpa) or
    a KEDA ScaledObject (keda, needed for scale to zero)."""

    __rules__ = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must be less than or equal to maxReplicas",
            lambda s: s.minReplicas <= s.maxReplicas,
            field_path=".minReplicas",
        ),
        Rule(
            "self.minReplicas > 0 || self.mode == 'keda'",
            "minReplicas: 0 (scale to zero) requires mode: keda",
            lambda s: s.minReplicas > 0 or s.mode == "keda",
            field_path=".minReplicas",
            reason="FieldValueForbidden",
        ),
        Rule(
            "self.minReplicas > 0 || self.metric.type != 'cpu'",
            "minReplicas: 0 cannot scale up from zero on cpu; use queueTime, pendingRequests or prometheus",
            lambda s: s.minReplicas > 0 or s.metric.type != "cpu",
            field_path=".minReplicas",
            reason="FieldValueForbidden",
        ),
        Rule(
            "self.metric.type != 'prometheus' || self.mode == 'keda'",
            "metric type prometheus (custom query) requires mode: keda",
            lambda s: s.metric.type != "prometheus" or s.mode == "keda",
            field_path=".metric.type",
        ),
        Rule(
            f"self.mode != 'hpa' || self.cooldownSeconds <= {HPA_MAX_WINDOW}",
            f"cooldownSeconds must be at most {HPA_MAX_WINDOW} in mode hpa (the HPA's scale-down "
            "stabilizationWindowSeconds limit)",
            lambda s: s.mode != "hpa" or s.cooldownSeconds <= HPA_MAX_WINDOW,
            field_path=".cooldownSeconds",
        ),
        Rule(
            "self.mode != 'keda' || self.metric.type == 'cpu' || has(self.prometheusAddress)",
            "prometheusAddress is required in keda mode for Prometheus-based metrics",
            lambda s: s.mode != "keda" or s.metric.type == "cpu" or s.prometheusAddress is not None,
            field_path=".prometheusAddress",
            reason="FieldValueRequired",
        ),
    )

    mode: Literal["hpa", "keda"] = Field(
        default="hpa", description="hpa: autoscaling/v2 HorizontalPodAutoscaler; keda: KEDA ScaledObject."
    )
    minReplicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Lower bound of replicas; 0 (scale to zero) only with mode keda.",
    )
    maxReplicas: int = Field(ge=1, le=1000, description="Upper bound of replicas.")
    metric: AutoscalingMetric = Field(description="The metric that drives scaling.")
    prometheusAddress: str | None = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Prometheus server URL that KEDA queries (keda mode, Prometheus-based metrics).",
    )
    cooldownSeconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Scale-down stabilisation window (hpa) / cooldownPeriod (keda), in seconds.",
    )


# --------------------------------------------------------------------------------------------------
# spec.rollout, spec.monitoring, spec.runtime
# --------------------------------------------------------------------------------------------------
class ReadinessGate(_Base):
    """Gate on a new model version: the old version keeps serving until the new one is Ready.

    With ``inPlace`` the agent enforces the gate itself: Triton keeps the old version until the new
    one is READY and keeps it when the new one fails to load. The settings below shape the
    Deployment of ``rolling`` rollouts; ``timeoutSeconds`` also bounds in-place loads that the
    operator watches through the agents (``--query-agents``)."""

    timeoutSeconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description=(
            "rolling: how long new pods may take to become Ready before the rollout is marked failed "
            "(ProgressDeadlineExceeded; the old pods keep serving). inPlace: a load that fails is "
            "reported at once; with the operator's --query-agents, a wanted version that is still not "
            "Ready this long after the model manifest changed is marked Failed (LoadTimeout). The old "
            "version keeps serving either way."
        ),
    )
    minReadySeconds: int = Field(
        default=0,
        ge=0,
        le=3600,
        description=(
            "rolling: how long a new pod must stay Ready before it counts as available and old pods "
            "are removed (Deployment minReadySeconds). inPlace: not used; the agent unloads the old "
            "version as soon as the new one is READY."
        ),
    )


class RolloutSpec(_Base):
    """How model-version and pod changes roll out."""

    __rules__ = (
        Rule(
            "!has(self.maxUnavailable) || !has(self.maxSurge) || "
            "!(string(self.maxUnavailable) in ['0', '0%'] && string(self.maxSurge) in ['0', '0%'])",
            "maxUnavailable and maxSurge must not both be 0",
            lambda s: not (_is_zero(s.maxUnavailable) and _is_zero(s.maxSurge)),
            field_path=".maxSurge",
        ),
    )

    strategy: Literal["inPlace", "rolling"] = Field(
        default="inPlace",
        description=(
            "inPlace: load new versions into the running Triton pods through the repository API and "
            "unload old ones once the new ones are Ready (needs modelControlMode explicit); rolling: "
            "roll out new pods."
        ),
    )
    maxUnavailable: IntOrPercent = Field(
        default=0, description="Deployment rolling update maxUnavailable (count or percentage)."
    )
    maxSurge: IntOrPercent = Field(
        default=1, description="Deployment rolling update maxSurge (count or percentage)."
    )
    readinessGate: ReadinessGate = Field(
        default_factory=ReadinessGate, description="Readiness gate on new versions."
    )


class MonitoringSpec(_Base):
    """Prometheus monitoring of Triton's metrics."""

    enabled: bool = Field(
        default=True,
        description="Create a ServiceMonitor for Triton's metrics port when the prometheus-operator CRD exists.",
    )
    interval: str = Field(
        default="30s", max_length=16, pattern=DURATION_PATTERN, description="Scrape interval."
    )
    labels: LabelMap | None = Field(
        default=None,
        description="Extra labels on the ServiceMonitor (for Prometheus' serviceMonitorSelector).",
    )


class RuntimeSpec(_Base):
    """The modeldeploy runtime agent (init container fetching models, sidecar loading them)."""

    image: str | None = Field(
        default=None,
        max_length=512,
        description=(
            f"Agent image. Default: {DEFAULT_RUNTIME_IMAGE} (or the operator's {RUNTIME_IMAGE_ENV}); "
            f"when a model has an LLM format (transformers, vllm, tensorrtllm): {DEFAULT_RUNTIME_LLM_IMAGE} "
            f"(or the operator's {RUNTIME_LLM_IMAGE_ENV}), which also runs the OpenAI-compatible endpoint."
        ),
    )
    resources: ContainerResources | None = Field(
        default=None, description="CPU/memory requests and limits of the agent containers."
    )

    def effective_image(self, llm: bool = False) -> str:
        """spec.runtime.image, else the operator's default for the pod: the runtime-llm image when
        the pod serves an LLM (``llm``, see ModelDeploymentSpec.runtime_image), else the runtime image."""
        if self.image:
            return self.image
        if llm:
            return os.environ.get(RUNTIME_LLM_IMAGE_ENV) or DEFAULT_RUNTIME_LLM_IMAGE
        return os.environ.get(RUNTIME_IMAGE_ENV) or DEFAULT_RUNTIME_IMAGE


# --------------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------------
def _spec_has_gpu(s: ModelDeploymentSpec) -> bool:
    return s.resources.uses_gpu()


_HAS_GPU_CEL = "(has(self.resources) && ((has(self.resources.gpu) && self.resources.gpu > 0) || has(self.resources.mig)))"


class NetworkPeer(_Base):
    """Who may connect: pods of a namespace (by name or by labels), optionally only those with
    podSelector's labels. podSelector alone means pods of the ModelDeployment's own namespace."""

    __rules__ = (
        Rule(
            "has(self.namespace) || has(self.namespaceSelector) || has(self.podSelector)",
            "a peer must set namespace, namespaceSelector or podSelector",
            lambda s: s.namespace is not None or s.namespaceSelector is not None or s.podSelector is not None,
        ),
        Rule(
            "!(has(self.namespace) && has(self.namespaceSelector))",
            "set namespace or namespaceSelector, not both",
            lambda s: s.namespace is None or s.namespaceSelector is None,
        ),
    )

    namespace: DNSLabel | None = Field(default=None, description="A namespace, by name.")
    namespaceSelector: LabelMap | None = Field(
        default=None, description="Namespaces with these labels ({} means every namespace)."
    )
    podSelector: LabelMap | None = Field(default=None, description="Only pods with these labels.")


class NetworkPolicySpec(_Base):
    """The NetworkPolicy of the Triton pods (ingress only; enforced by the cluster's network plugin)."""

    enabled: bool = Field(default=True, description="Render the NetworkPolicy (false: no policy).")
    inferenceFrom: list[NetworkPeer] | None = Field(
        default=None,
        max_length=32,
        description="Who may reach the inference ports (HTTP, gRPC). Default: every pod of the same namespace.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    monitoringNamespace: DNSLabel | None = Field(
        default=None,
        description="Namespace (Prometheus) allowed to scrape the metrics port. Unset: nobody but the node.",
    )


#: The smallest spec.cache.maxSize (a cache smaller than this holds no model).
MIN_CACHE_SIZE = "1Mi"


class ModelCacheSpec(_Base):
    """A shared model cache (issue #14): a PersistentVolumeClaim holding model versions by digest
    (``sha256/<digest>``), filled by a prefetch Job and mounted read-only by the model pods."""

    __rules__ = (
        Rule(
            f"!has(self.maxSize) || !{cel_quantity_ok('self.maxSize')} || "
            f"!quantity(string(self.maxSize)).isLessThan(quantity('{MIN_CACHE_SIZE}'))",
            f"cache.maxSize must be at least {MIN_CACHE_SIZE}",
            lambda c: c.maxSize is None or parse_quantity(c.maxSize) >= parse_quantity(MIN_CACHE_SIZE),
            field_path=".maxSize",
        ),
    )

    claimName: DNSSubdomain = Field(
        description=(
            "PersistentVolumeClaim of the cache, in this namespace: ReadWriteMany to share it across "
            "nodes (several ModelDeployments may name the same claim), or a per-node local volume."
        )
    )
    prefetch: bool = Field(
        default=True,
        description=(
            "Run a prefetch Job (the runtime image, prefetch mode) that fills the cache with every "
            "wanted version that pins a sha256; status.cache reports it (Prefetching while it runs)."
        ),
    )
    maxSize: IntOrStringQuantity | None = Field(
        default=None,
        description=(
            "Evict entries when the cache holds more than this (e.g. 200Gi; an integer or a quantity "
            "string, read by a CEL rule): after each prefetch, "
            "entries no ModelDeployment sharing the claim wants are removed, least recently used "
            "first, never one being read or published. Unset: nothing is evicted."
        ),
    )


class ModelDeploymentSpec(_Base):
    """Desired state: models served by a set of Triton pods."""

    __rules__ = (
        Rule(
            "!self.models.exists(m, has(m.instanceGroups) && m.instanceGroups.exists(g, g.kind == 'GPU')) || "
            + _HAS_GPU_CEL,
            "instanceGroups of kind GPU need resources.gpu > 0 or resources.mig",
            lambda s: (
                _spec_has_gpu(s)
                or not any(g.kind == "GPU" for m in s.models for g in (m.instanceGroups or []))
            ),
            field_path=".resources",
            reason="FieldValueRequired",
        ),
        Rule(
            "!self.models.exists(m, m.format == 'tensorrt') || " + _HAS_GPU_CEL,
            "format tensorrt needs a GPU: set resources.gpu > 0 or resources.mig",
            lambda s: _spec_has_gpu(s) or not any(m.format == "tensorrt" for m in s.models),
            field_path=".resources",
            reason="FieldValueRequired",
        ),
        Rule(
            "!self.models.exists(m, m.format in ['vllm', 'tensorrtllm']) || "
            "(has(self.resources) && has(self.resources.gpu) && self.resources.gpu > 0) || "
            "(has(self.resources) && has(self.resources.mig))",
            "formats vllm and tensorrtllm need a GPU: set resources.gpu > 0 or resources.mig",
            lambda s: _spec_has_gpu(s) or not any(m.format in GPU_LLM_FORMATS for m in s.models),
            field_path=".resources",
            reason="FieldValueRequired",
        ),
        Rule(
            "!has(self.resources) || !has(self.resources.mig) || "
            "!self.models.exists(m, m.format in ['vllm', 'tensorrtllm'] && "
            "(has(m.llm) && has(m.llm.tensorParallelSize) ? m.llm.tensorParallelSize : self.resources.mig.count) > 1)",
            "resources.mig is one GPU slice: an engine over several GPUs (tensorParallelSize > 1) needs whole "
            "GPUs (resources.gpu)",
            lambda s: (
                s.resources.mig is None
                or all(
                    m.tensor_parallel_size(s.resources.mig.count) <= 1
                    for m in s.models
                    if m.format in GPU_LLM_FORMATS
                )
            ),
            field_path=".resources.mig",
            reason="FieldValueForbidden",
        ),
        Rule(
            "self.models.all(m, !has(m.llm) || !has(m.llm.tensorParallelSize) || m.llm.tensorParallelSize == 1 || "
            "(has(self.resources) && has(self.resources.gpu) && self.resources.gpu > 0 && "
            "self.resources.gpu % m.llm.tensorParallelSize == 0))",
            "models[].llm.tensorParallelSize must divide resources.gpu: a tensor-parallel engine runs on "
            f"whole GPUs of one pod, so of one node (at most {MAX_GPUS_PER_NODE})",
            lambda s: all(
                m.llm.tensorParallelSize == 1
                or (s.resources.gpu > 0 and s.resources.gpu % m.llm.tensorParallelSize == 0)
                for m in s.models
                if m.llm is not None and m.llm.tensorParallelSize is not None
            ),
            field_path=".resources.gpu",
        ),
        Rule(
            f"!self.models.exists(m, m.format in {_LLM_FORMATS_CEL}) || !has(self.server) || "
            f"!has(self.server.ports) || [self.server.ports.http, self.server.ports.grpc, "
            f"self.server.ports.metrics].all(p, p != {OPENAI_PORT})",
            f"server ports must not use {OPENAI_PORT}, the port of the OpenAI-compatible endpoint of LLM pods",
            lambda s: (
                not s.serves_llm()
                or OPENAI_PORT not in (s.server.ports.http, s.server.ports.grpc, s.server.ports.metrics)
            ),
            field_path=".server.ports",
        ),
        Rule(
            "!has(self.autoscaling) || !(self.autoscaling.metric.type in ['inFlightRequests', 'timeToFirstToken']) || "
            f"self.models.exists(m, m.format in {_LLM_FORMATS_CEL})",
            "autoscaling.metric.type inFlightRequests and timeToFirstToken need a model with an LLM format "
            "(transformers, vllm, tensorrtllm): they are read from the OpenAI-compatible endpoint of LLM pods",
            lambda s: (
                s.autoscaling is None or s.autoscaling.metric.type not in LLM_METRIC_TYPES or s.serves_llm()
            ),
            field_path=".autoscaling.metric.type",
        ),
        Rule(
            "!has(self.autoscaling) || self.autoscaling.metric.type != 'kvCacheUsage' || "
            "self.models.exists(m, m.format == 'vllm')",
            "autoscaling.metric.type kvCacheUsage needs a model with format vllm (vLLM's vllm:gpu_cache_usage_perc)",
            lambda s: (
                s.autoscaling is None
                or s.autoscaling.metric.type != "kvCacheUsage"
                or any(m.format == "vllm" for m in s.models)
            ),
            field_path=".autoscaling.metric.type",
        ),
        Rule(
            "!has(self.server) || !has(self.server.modelControlMode) || self.server.modelControlMode == 'explicit' || "
            "(has(self.rollout) && has(self.rollout.strategy) && self.rollout.strategy == 'rolling')",
            "server.modelControlMode none needs rollout.strategy rolling (in-place rollouts load versions through the repository API)",
            lambda s: s.server.modelControlMode == "explicit" or s.rollout.strategy == "rolling",
            field_path=".rollout.strategy",
        ),
        Rule(
            f"!has(self.podLabels) || self.podLabels.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}'))",
            f"podLabels must not use the reserved prefix {RESERVED_LABEL_PREFIX}",
            lambda s: not s.podLabels or not any(k.startswith(RESERVED_LABEL_PREFIX) for k in s.podLabels),
            field_path=".podLabels",
            reason="FieldValueForbidden",
        ),
    )
    __operator_rules__ = (
        Rule(
            "",
            "autoscaling on cpu needs resources.requests.cpu",
            lambda s: (
                s.autoscaling is None
                or s.autoscaling.metric.type != "cpu"
                or (s.resources.requests is not None and s.resources.requests.cpu is not None)
            ),
            field_path=".resources.requests.cpu",
        ),
    )

    models: list[ModelSpec] = Field(
        min_length=1,
        max_length=16,
        description="The models served together by every Triton pod (unique names).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    server: ServerSpec = Field(default_factory=ServerSpec, description="The Triton server container.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="CPU, memory and GPU resources of each pod."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Node selection, tolerations, affinity, spreading."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Number of Triton pods (scale subresource). Managed by the autoscaler when autoscaling is set.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Horizontal autoscaling (hpa or keda). Unset: a fixed number of replicas."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="Rollout of version and pod changes."
    )
    serviceAccountName: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="ServiceAccount of the pods (e.g. for workload identity to the model store).",
    )
    podLabels: LabelMap | None = Field(default=None, description="Extra labels on the pods.")
    podAnnotations: AnnotationMap | None = Field(default=None, description="Extra annotations on the pods.")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec, description="Prometheus monitoring.")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="The runtime agent containers.")
    networkPolicy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec,
        description="Who may reach the pods' inference, agent and metrics ports (a NetworkPolicy, on by default).",
    )
    cache: ModelCacheSpec | None = Field(
        default=None,
        description=(
            "Shared model cache: pods read versions from it by digest instead of downloading them "
            "(and download when a digest is missing)."
        ),
    )

    # ---- effective values -------------------------------------------------------------------
    def autoscaling_enabled(self) -> bool:
        return self.autoscaling is not None

    def serves_llm(self) -> bool:
        """Whether the pods run the OpenAI-compatible endpoint (some model has an LLM format)."""
        return any(m.is_llm() for m in self.models)

    def runtime_image(self) -> str:
        """The image of the agent containers (and of the OpenAI endpoint and the prefetch Job):
        spec.runtime.image, else the runtime-llm image for pods serving an LLM, else the runtime image."""
        return self.runtime.effective_image(llm=self.serves_llm())

    def startup_budget_seconds(self) -> int:
        """server.startupTimeoutSeconds plus the time to fetch and load the LLM weights declared in
        models[].llm.weightsSize (STARTUP_SECONDS_PER_BYTE)."""
        weights = sum(
            parse_quantity(m.llm.weightsSize)
            for m in self.models
            if m.llm is not None and m.llm.weightsSize is not None
        )
        return self.server.startupTimeoutSeconds + math.ceil(float(weights) * STARTUP_SECONDS_PER_BYTE)

    def desired_versions(self) -> dict[str, list[int]]:
        """Model name -> version numbers Triton must serve."""
        return {m.name: m.desired_versions() for m in self.models}

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------------
class Condition(_Base):
    """A status condition (Kubernetes API conventions, like metav1.Condition)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description=(
            "Condition type: Ready, ModelsReady, Progressing, Degraded; and, for kstatus (Flux), "
            "Reconciling or Stalled while True."
        ),
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observedGeneration: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )
    lastTransitionTime: str = Field(
        max_length=64,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="CamelCase reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")


class VersionFetchStatus(_Base):
    """Per pod count, from the agents' reports (cold start from the cache or the store)."""

    fromCache: int = Field(
        default=0, ge=0, description="Pods that read it from the shared model cache (0 bytes from the store)."
    )
    downloaded: int = Field(default=0, ge=0, description="Pods that downloaded it from the model store.")
    local: int = Field(
        default=0,
        ge=0,
        description="Pods that had it already (their own repository, or another version with its digest).",
    )
    bytesDownloaded: int = Field(
        default=0, ge=0, description="Bytes these pods transferred from the model store for it."
    )


class VersionStatus(_Base):
    """The state of one model version across the pods."""

    version: int = Field(ge=1, le=2147483647, description="Version number.")
    state: VersionState = Field(description="Pending, Loading, Ready, Failed or Unloaded.")
    reason: str = Field(default="", max_length=1024, description="CamelCase reason for the state.")
    message: str = Field(default="", max_length=32768, description="Details, e.g. the load error.")
    readyReplicas: int | None = Field(default=None, ge=0, description="Pods serving this version.")
    digest: str | None = Field(
        default=None,
        max_length=80,
        description="sha256 of the served version's content, as the agents verified it.",
    )
    signer: str | None = Field(
        default=None,
        max_length=1024,
        description="Identity that signed the served version (verification policy).",
    )
    fetch: VersionFetchStatus | None = Field(
        default=None, description="How the pods got this version: from the shared cache or downloaded."
    )


class ModelStatus(_Base):
    """The state of one model's versions."""

    name: str = Field(min_length=1, max_length=63, description="Model name.")
    versions: list[VersionStatus] = Field(
        default_factory=list,
        max_length=64,
        description="Per-version state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["version"]},
    )


class Endpoints(_Base):
    """In-cluster URLs of the Triton service."""

    http: str | None = Field(
        default=None, max_length=2048, description="HTTP/REST URL, e.g. http://x.ns.svc:8000."
    )
    grpc: str | None = Field(default=None, max_length=2048, description="gRPC address, e.g. x.ns.svc:8001.")
    openai: str | None = Field(
        default=None,
        max_length=2048,
        description="OpenAI-compatible API base URL when an LLM is served, e.g. http://x.ns.svc:9000/v1.",
    )


class ScaleFromZeroStatus(_Base):
    """How a request reaches a ModelDeployment scaled to zero (autoscaling.mode keda, minReplicas 0)."""

    route: Literal["Interceptor", "Unavailable"] = Field(
        description=(
            "Interceptor: the Service is an ExternalName alias of the KEDA HTTP add-on interceptor, "
            "so an HTTP request wakes the deployment; Unavailable: the add-on is not installed."
        )
    )
    interceptor: str | None = Field(
        default=None, max_length=512, description="The interceptor proxy Service (host:port) requests go to."
    )
    backendService: str | None = Field(
        default=None, max_length=63, description="The pods' Service the interceptor forwards to."
    )
    message: str = Field(default="", max_length=32768, description="Details.")


class CacheEventStatus(_Base):
    """A corrupt cache entry an agent or the prefetch Job found (quarantined, then fetched again)."""

    time: str = Field(max_length=64, description="When it was found (RFC 3339).")
    digest: str = Field(max_length=80, description="sha256 of the entry.")
    event: str = Field(max_length=64, description="CorruptEntry (found) or CorruptEntryRefetched (replaced).")
    pod: str = Field(default="", max_length=253, description="The pod whose agent (or Job) found it.")
    message: str = Field(default="", max_length=1024, description="What was wrong.")


class CacheStatus(_Base):
    """The shared model cache as the operator last saw it."""

    claimName: str = Field(max_length=253, description="The cache's PersistentVolumeClaim.")
    state: Literal["Prefetching", "Ready", "Failed", "NotPrefetched"] = Field(
        description=(
            "Prefetching: the prefetch Job runs; Ready: it completed (every version below is in the "
            "cache, verified); Failed: it failed (pods download what is missing); NotPrefetched: prefetch is off."
        )
    )
    job: str | None = Field(default=None, max_length=253, description="The current prefetch Job.")
    versionsPresent: list[str] | None = Field(
        default=None, max_length=1024, description="Versions in the cache, as model:version@sha256-prefix."
    )
    bytes: int | None = Field(default=None, ge=0, description="Bytes of the cache's entries (when reported).")
    lastVerification: str | None = Field(
        default=None,
        max_length=64,
        description="When the entries were last verified (the prefetch Job or an agent; RFC 3339).",
    )
    entries: int | None = Field(default=None, ge=0, description="Entries (digests) in the cache.")
    corruptEntries: list[CacheEventStatus] | None = Field(
        default=None,
        max_length=10,
        description="Corrupt entries found (quarantined and fetched again), newest last.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    message: str = Field(default="", max_length=32768, description="Details, e.g. why the Job failed.")


class ModelDeploymentStatus(_Base):
    """Observed state, written by the operator."""

    observedGeneration: int | None = Field(
        default=None, ge=0, description="Last metadata.generation reconciled."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        description="Ready, ModelsReady, Progressing, Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(
        default=None, ge=0, description="Current number of pods (scale subresource)."
    )
    readyReplicas: int | None = Field(
        default=None, ge=0, description="Pods whose every expected version is Ready."
    )
    updatedReplicas: int | None = Field(
        default=None, ge=0, description="Pods running the current pod template."
    )
    selector: str | None = Field(
        default=None, max_length=1024, description="Label selector of the pods (scale subresource, for HPA)."
    )
    endpoints: Endpoints | None = Field(default=None, description="In-cluster endpoints.")
    models: list[ModelStatus] | None = Field(
        default=None,
        max_length=16,
        description="Per model and version: the serving state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    versionsReady: str | None = Field(
        default=None, max_length=32, description="Summary: ready/expected model versions, e.g. 3/3."
    )
    servedVersions: str | None = Field(
        default=None, max_length=1024, description="Summary of the versions served, e.g. resnet:1,2 bert:3."
    )
    replicasSummary: str | None = Field(
        default=None, max_length=32, description="Summary: ready/desired replicas, e.g. 2/3."
    )
    gpus: str | None = Field(
        default=None, max_length=64, description="GPUs per pod, e.g. 1 or 1 x mig-1g.10gb."
    )

    cache: CacheStatus | None = Field(default=None, description="The shared model cache (spec.cache).")
    scaleFromZero: ScaleFromZeroStatus | None = Field(
        default=None, description="Scale from zero on a request (autoscaling.mode keda, minReplicas 0)."
    )

    def condition(self, type_: str) -> Condition | None:
        for c in self.conditions or []:
            if c.type == type_:
                return c
        return None


# --------------------------------------------------------------------------------------------------
# the object
# --------------------------------------------------------------------------------------------------
class SpecError(ValueError):
    """An invalid ModelDeployment; ``errors`` are ``"<field path>: <message>"`` strings."""

    def __init__(self, errors: list[str], name: str | None = None) -> None:
        self.errors = errors
        self.name = name
        prefix = f"ModelDeployment {name}: " if name else ""
        super().__init__(prefix + "; ".join(errors))


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-"):
            continue  # validator markers
        else:
            out += f".{part}" if out else str(part)
    return out


def format_validation_error(exc: ValidationError, root: str = "") -> list[str]:
    """Turn a pydantic ValidationError into ``"spec.models[0].name: message"`` lines."""
    lines: list[str] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        path = _loc_to_path(tuple(err["loc"]))
        ctx = err.get("ctx") or {}
        fp = str(ctx.get("field_path", "") or "")
        if fp:
            path = path + fp if path else fp.lstrip(".")
        if root:
            path = f"{root}.{path}" if path else root
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        line = f"{path}: {msg}" if path else msg
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


def _plain(v: Any) -> Any:
    """Deep-copy Mappings (e.g. kopf's body views) and lists into plain dicts and lists, seeing
    numbers as the API server does: a JSON number with an integral value (``2.0``) is an integer."""
    if v is None or isinstance(v, str | int):  # the leaves first: no ABC check (its caches) for them
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else v
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


class ModelDeployment(BaseModel):
    """A ModelDeployment object (apiVersion, kind, metadata, spec, status)."""

    model_config = ConfigDict(extra="ignore")

    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation") or 0)

    @classmethod
    def parse_spec(cls, spec: dict[str, Any] | Any, name: str | None = None) -> ModelDeploymentSpec:
        """Parse a ``spec`` mapping; raises :class:`SpecError` naming every bad field (``spec.…``)."""
        try:
            return ModelDeploymentSpec.model_validate(_plain(spec or {}))
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, root="spec"), name=name) from None

    @classmethod
    def from_body(cls, body: dict[str, Any] | Any) -> ModelDeployment:
        """Parse a whole object (e.g. kopf's ``body``). Invalid spec -> :class:`SpecError`; a status
        that does not parse (e.g. written by another version) is dropped rather than failing."""
        body = _plain(body)
        metadata = dict(body.get("metadata") or {})
        name = metadata.get("name")
        if name is not None and not (len(name) <= MAX_NAME_LENGTH and full_match(NAME_PATTERN, name)):
            raise SpecError([NAME_MESSAGE], name=name)
        spec = cls.parse_spec(body.get("spec") or {}, name=metadata.get("name"))
        status: ModelDeploymentStatus | None = None
        if body.get("status"):
            try:
                status = ModelDeploymentStatus.model_validate(body["status"])
            except ValidationError:
                status = None
        return cls(
            apiVersion=body.get("apiVersion", API_VERSION),
            kind=body.get("kind", KIND),
            metadata=metadata,
            spec=spec,
            status=status,
        )

    def to_body(self) -> dict[str, Any]:
        """The object as the API server stores it (no nulls)."""
        return dump(self)


def dump(obj: BaseModel) -> dict[str, Any]:
    """Serialise any API model to the JSON shape the CRD accepts (``None`` fields left out)."""
    return obj.model_dump(mode="json", exclude_none=True)


def check_update(old: ModelDeploymentSpec, new: ModelDeploymentSpec) -> list[str]:
    """Python twin of the CRD's transition rules (``oldSelf``): errors for an update old -> new."""
    errors: list[str] = []
    old_models = {m.name: m for m in old.models}
    for i, m in enumerate(new.models):
        prev = old_models.get(m.name)
        if prev is not None and prev.format != m.format:
            errors.append(
                f"spec.models[{i}].format: format is immutable; serve the new format under a new model name"
            )
    return errors


__all__ = [
    "AGENT_PORT",
    "API_VERSION",
    "CATEGORIES",
    "CONDITION_TYPES",
    "CRD_NAME",
    "DEFAULT_RUNTIME_IMAGE",
    "DEFAULT_RUNTIME_LLM_IMAGE",
    "DEFAULT_TRITON_IMAGE",
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "GROUP",
    "KIND",
    "LLM_FORMATS",
    "LLM_METRIC_TYPES",
    "OPENAI_PORT",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "AutoscalingMetric",
    "AutoscalingSpec",
    "CacheStatus",
    "Condition",
    "Credentials",
    "DynamicBatching",
    "Endpoints",
    "InstanceGroup",
    "LLMSpec",
    "MigSpec",
    "ModelCacheSpec",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelSpec",
    "ModelStatus",
    "ModelVersion",
    "MonitoringSpec",
    "ReadinessGate",
    "ResourcesSpec",
    "RolloutSpec",
    "Rule",
    "RuntimeSpec",
    "SchedulingSpec",
    "ServerSpec",
    "SpecError",
    "Tensor",
    "VersionPolicy",
    "VersionStatus",
    "check_update",
    "dump",
    "format_validation_error",
    "operator_rule_errors",
    "parse_quantity",
    "quantity_string",
]
