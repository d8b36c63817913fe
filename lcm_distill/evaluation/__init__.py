"""Evaluation harness: seeded generation, FID/KID (pluggable features), CLIP score, latency split, reports."""

from .features import FeatureExtractor, InceptionV3Features, ModuleFeatures, extract_features, inception_weights_path
from .generation import KINDS, TIMESTEP_SPACINGS, configure_scheduler, generate, load_pipeline
from .harness import EvalConfig, run_evaluation, select_prompts
from .latency import LatencyMeter, LatencySplit
from .metrics import ClipScoreConfig, ClipScorer, PromptScorer, fid_from_features, kid_from_features
from .report import (
    SCHEMA_VERSION,
    EvalReport,
    ResultRow,
    load_report,
    markdown_table,
    plot_quality_vs_steps,
    save_grid,
    validate_report,
)

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "TIMESTEP_SPACINGS",
    "ClipScoreConfig",
    "ClipScorer",
    "EvalConfig",
    "EvalReport",
    "FeatureExtractor",
    "InceptionV3Features",
    "LatencyMeter",
    "LatencySplit",
    "ModuleFeatures",
    "PromptScorer",
    "ResultRow",
    "configure_scheduler",
    "extract_features",
    "fid_from_features",
    "generate",
    "inception_weights_path",
    "kid_from_features",
    "load_pipeline",
    "load_report",
    "markdown_table",
    "plot_quality_vs_steps",
    "run_evaluation",
    "save_grid",
    "select_prompts",
    "validate_report",
]
