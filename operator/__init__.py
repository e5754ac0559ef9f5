"""modeldeploy operator: reconciles ModelDeployment objects into Triton serving stacks.

The folder is ``operator/`` but the import name is ``modeldeploy`` (see pyproject.toml): a package
named ``operator`` would hide the standard library module.
"""

__version__ = "0.1.0"
