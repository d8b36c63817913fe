"""lcm-distill: Latent Consistency Distillation and Fine-tuning on the Hugging Face stack."""

__version__ = "0.1.0.dev0"
