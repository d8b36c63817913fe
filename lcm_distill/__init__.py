"""lcm-distill: Latent Consistency Distillation and Fine-tuning on the Hugging Face stack."""

import logging as _logging

__version__ = "0.2.0.dev0"  # the one version number (pyproject.toml reads it)

# bitsandbytes (pinned for optim.use_8bit_adam) warns at import, on CPUs with AVX512-bf16, that its optional 4-bit
# CPU inference kernels are missing; diffusers imports it eagerly, so every command would print that. We never use
# 4-bit kernels: errors still show.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
