# syntax=docker/dockerfile:1
# The modeldeploy operator image: `mdctl operator run` (kopf) and nothing else.
#   docker build -f docker/operator.Dockerfile -t ghcr.io/modeldeploy/operator:0.1.0 .
# Installs the package with exactly the `operator` extra of pyproject.toml
# (tests/chart/test_dockerfiles.py keeps this file and the package metadata in step).
# Pinned base; pin it by digest too in your release pipeline (python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY operator/ operator/
COPY runtime/ runtime/
RUN python -m venv /opt/modeldeploy \
 && /opt/modeldeploy/bin/pip install ".[operator]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modeldeploy-operator" \
      org.opencontainers.image.description="Kubernetes operator deploying ML models onto NVIDIA Triton" \
      org.opencontainers.image.source="https://github.com/modeldeploy/modeldeploy" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/modeldeploy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/modeldeploy /opt/modeldeploy
# Non-root, numeric (PodSecurity "restricted" checks runAsNonRoot against a numeric user).
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["mdctl"]
CMD ["operator", "run", "--all-namespaces"]
