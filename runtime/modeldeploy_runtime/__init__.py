"""modeldeploy runtime: packages models for Triton, keeps a pod's model repository in sync, and
checks that every expected model version is really served.

It runs inside the Triton pod, so it must import and work without kopf or the kubernetes client.
"""

# The one place the version is written: pyproject.toml reads it (setuptools dynamic metadata), the
# operator re-exports it, the chart test compares Chart.yaml with it.
__version__ = "0.1.0"
