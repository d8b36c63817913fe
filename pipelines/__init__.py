"""Inference pipelines (installed as lcm_distill.pipelines)."""
