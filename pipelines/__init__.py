"""Inference pipelines (installed as ``lcm_distill.pipelines``): ``from lcm_distill.pipelines import LCMPipeline``.

``pipeline_lcm.py`` (SD 1.x / 2.x) and ``pipeline_lcm_sdxl.py`` (SDXL) are each self-contained (torch/diffusers/
transformers only) because each is shipped beside exported weights for ``DiffusionPipeline.from_pretrained(...,
custom_pipeline="pipeline_lcm" or "pipeline_lcm_sdxl", trust_remote_code=True)``.
"""

from .pipeline_lcm import PIPELINE_FILE_NAME, LCMPipeline
from .pipeline_lcm_sdxl import PIPELINE_FILE_NAME as SDXL_PIPELINE_FILE_NAME
from .pipeline_lcm_sdxl import LCMXLPipeline

__all__ = ["PIPELINE_FILE_NAME", "SDXL_PIPELINE_FILE_NAME", "LCMPipeline", "LCMXLPipeline"]
