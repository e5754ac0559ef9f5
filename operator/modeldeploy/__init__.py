"""modeldeploy operator: reconciles ModelDeployment objects into Triton serving stacks.

Lives in ``operator/modeldeploy/``; the ``operator/`` folder above it is not a package.
"""

from modeldeploy_runtime import __version__

__all__ = ["__version__"]
