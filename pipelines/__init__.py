"""Inference pipelines (installed as ``lcm_distill.pipelines``): ``from lcm_distill.pipelines import LCMPipeline``.

``pipeline_lcm.py`` is self-contained (torch/diffusers/transformers only) because it is shipped beside exported
weights for ``DiffusionPipeline.from_pretrained(..., custom_pipeline="pipeline_lcm", trust_remote_code=True)``.
"""

from .pipeline_lcm import PIPELINE_FILE_NAME, LCMPipeline

__all__ = ["PIPELINE_FILE_NAME", "LCMPipeline"]
