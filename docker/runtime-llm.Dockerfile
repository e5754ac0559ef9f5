# syntax=docker/dockerfile:1
# The modeldeploy runtime image for pods that serve large language models: the runtime agent plus
# the `llm` extra (torch, transformers, tritonclient, FastAPI/uvicorn) for `modeldeploy-runtime openai`,
# the OpenAI-compatible endpoint the operator runs next to Triton. The operator uses it for pods
# serving an LLM format unless spec.runtime.image is set (MODELDEPLOY_RUNTIME_LLM_IMAGE overrides).
# No kopf, no kubernetes client (tests/chart/test_dockerfiles.py checks both).
#   docker build -f docker/runtime-llm.Dockerfile -t ghcr.io/modeldeploy/runtime-llm:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY operator/ operator/
COPY runtime/ runtime/
RUN python -m venv /opt/modeldeploy \
 && /opt/modeldeploy/bin/pip install ".[llm]" \
 && ! /opt/modeldeploy/bin/python -c "import kopf" 2>/dev/null \
 && ! /opt/modeldeploy/bin/python -c "import kubernetes" 2>/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modeldeploy-runtime-llm" \
      org.opencontainers.image.description="modeldeploy runtime agent and OpenAI-compatible endpoint for LLM pods" \
      org.opencontainers.image.source="https://github.com/modeldeploy/modeldeploy" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/modeldeploy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/modeldeploy /opt/modeldeploy
USER 65532:65532
EXPOSE 8080 9000
ENTRYPOINT ["modeldeploy-runtime"]
CMD ["agent", "--mode", "sidecar", "--manifest", "/etc/modeldeploy/manifest.json", "--repository", "/models", "--triton-url", "http://127.0.0.1:8000", "--port", "8080"]
