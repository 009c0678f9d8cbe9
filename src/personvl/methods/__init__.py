"""Pre-training methods: what each recipe trains. A method is a module whose
``forward(batch, progress)`` returns named losses (``"loss"`` is the weighted total) and whose
``parameter_groups()`` gives the optimiser groups; ``encoder`` is the PersonEncoder it trains."""

from personvl.methods.registry import METHODS, build_method

__all__ = ["METHODS", "build_method"]
