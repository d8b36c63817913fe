"""Each convention is named once: config choice lists equal the implementations' registries, every --dtype flag
takes the one dtype table's names, the self-contained pipeline's copies equal the canonical values, and no module
restates a convention as a literal (omega = g - 1, the default guidance 8.5, T = 1000)."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from lcm_distill import conventions
from lcm_distill.config_checks import CHOICES

ROOT = Path(__file__).resolve().parents[1]


def registries() -> dict[str, tuple[tuple, str]]:
    """Every choice-valued config key -> (the implementation's registry, "equal" | "subset"). "subset": the key offers
    part of a library's own list (accelerate's precisions without fp8, its trackers, torch's compile backends)."""
    import torch._dynamo
    from accelerate.utils import LoggerType, PrecisionType
    from diffusers.optimization import SchedulerType

    from lcm_distill.conditioning import SDXL_TIME_IDS
    from lcm_distill.data import SOURCES
    from lcm_distill.data.transforms import INTERPOLATION
    from lcm_distill.engine.ema import EMA_IMPLS
    from lcm_distill.engine.engine_choice import ENGINES
    from lcm_distill.engine.quality import EXPORT_FROM, QUALITY_FEATURES
    from lcm_distill.engine.setup import ADAMW_IMPLS
    from lcm_distill.functional import CFG_PLACEMENTS, DTYPES, LOSS_TYPES, SOLVERS, TIMESTEP_SAMPLINGS
    from lcm_distill.functional.curriculum import CURRICULA, EMA_SCHEDULES
    from lcm_distill.models import ATTENTION_IMPLS, COND_PROJ_INITS
    from lcm_distill.objectives import OBJECTIVES

    eq = lambda names: (tuple(names), "equal")  # noqa: E731
    return {
        "objective.solver": eq(SOLVERS), "objective.cfg_placement": eq(CFG_PLACEMENTS),
        "objective.loss": eq(LOSS_TYPES), "objective.kind": eq(OBJECTIVES), "model.frozen_dtype": eq(DTYPES),
        "model.attention": eq(ATTENTION_IMPLS), "model.cond_proj_init": eq(COND_PROJ_INITS),
        "data.source": eq(SOURCES), "data.interpolation": eq(INTERPOLATION), "train.ema_impl": eq(EMA_IMPLS),
        "data.sdxl_time_ids": eq(SDXL_TIME_IDS),
        "objective.timestep_sampling": eq(TIMESTEP_SAMPLINGS), "objective.curriculum": eq(CURRICULA),
        "train.ema_schedule": eq(EMA_SCHEDULES), "train.distributed": eq(ENGINES),
        "optim.adamw_impl": eq(ADAMW_IMPLS), "train.quality_features": eq(QUALITY_FEATURES),
        "train.export_from": eq(EXPORT_FROM), "optim.lr_scheduler": (tuple(s.value for s in SchedulerType), "same set"),
        "train.mixed_precision": (tuple(p.value for p in PrecisionType if p.value != "fp8"), "same set"),
        "train.report_to": ((*(t.value for t in LoggerType), "none"), "subset"),
        "model.compile_backend": (tuple(torch._dynamo.list_backends(exclude_tags=())), "subset"),
    }  # fmt: skip


def test_every_choice_valued_key_is_tied_to_its_registry():
    untied = sorted(set(CHOICES) - set(registries()))
    assert untied == [], f"tie {untied} to the registry that implements them in registries() above"


@pytest.mark.parametrize("key", sorted(registries()))
def test_config_choices_are_the_registries(key):
    names, relation = registries()[key]
    ours = tuple(CHOICES[key])
    if relation == "equal":
        assert ours == names, f"{key}: CHOICES drifted from the code"
    elif relation == "same set":
        assert set(ours) == set(names), f"{key}: CHOICES drifted from the library's list"
    else:
        assert set(ours) <= set(names), f"{key}: {sorted(set(ours) - set(names))} is not the library's"


def test_objective_facts_and_functions_register_the_same_kinds():
    from lcm_distill.objective_kinds import OBJECTIVE_KINDS
    from lcm_distill.objectives import OBJECTIVES

    assert tuple(OBJECTIVES) == tuple(OBJECTIVE_KINDS)
    assert all(OBJECTIVES[k].kind is OBJECTIVE_KINDS[k] for k in OBJECTIVES)


def test_source_facts_and_openers_register_the_same_sources():
    from lcm_distill.data import SOURCES
    from lcm_distill.source_kinds import SOURCE_KINDS

    assert tuple(SOURCES) == tuple(SOURCE_KINDS)


def test_every_dtype_flag_takes_the_dtype_table():
    from lcm_distill.cli import cache, evaluate, generate
    from lcm_distill.functional import DTYPES, dtype_from_name

    assert tuple(DTYPES) == conventions.DTYPE_NAMES
    parsers = {"cache": cache.build_parser(), "evaluate": evaluate.build_parser(), "generate": generate.build_parser()}
    for name, parser in parsers.items():
        action = next(a for a in parser._actions if "--dtype" in a.option_strings)
        assert tuple(action.choices) == conventions.DTYPE_NAMES, name
        assert action.type("float16") == "fp16", f"{name}: the deprecated spelling still maps for one release"
    import torch

    assert dtype_from_name("bf16") is torch.bfloat16 and dtype_from_name("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"model\.frozen_dtype"):
        dtype_from_name("int8", "model.frozen_dtype")


def test_the_pipeline_copies_are_the_canonical_values():
    from lcm_distill.pipelines import pipeline_lcm, pipeline_lcm_sdxl

    from lcm_distill.config import TrainConfig
    from lcm_distill.export import ModelCardInfo

    assert pipeline_lcm.DEFAULT_GUIDANCE_SCALE == conventions.DEFAULT_GUIDANCE_SCALE
    # the SDXL pipeline's omega = g - 1 is checked against stock SDXL (tests/pipelines/test_sdxl_pipeline.py)
    assert pipeline_lcm_sdxl.DEFAULT_GUIDANCE_SCALE == conventions.DEFAULT_GUIDANCE_SCALE
    assert TrainConfig().validation_guidance_scale == conventions.DEFAULT_GUIDANCE_SCALE
    assert ModelCardInfo(base_model="x").guidance_scale == conventions.DEFAULT_GUIDANCE_SCALE
    assert conventions.omega_from_guidance_scale(9.0) == 8.0 and conventions.guidance_scale_from_omega(8.0) == 9.0
    assert conventions.num_train_timesteps({}) == 1000 and conventions.num_train_timesteps({"num_train_timesteps": 4})


# Code (comments and strings removed) that restates a convention instead of naming it.
RESTATED = {
    "omega = g - 1 (use omega_from_guidance_scale)": re.compile(r"\b(g|guidance(_scale)?)\s*\)?\s*-\s*1(\.0)?\b"),
    "g = omega + 1 (use guidance_scale_from_omega)": re.compile(r"\bomega\s*\)?\s*\+\s*1(\.0)?\b"),
    "the default guidance 8.5 (use DEFAULT_GUIDANCE_SCALE)": re.compile(r"(?<![\w.])8\.5(?![\w.])"),
    "T = 1000 (use num_train_timesteps(config))": re.compile(r"\b1000\s*(%|//)|(%|//)\s*1000\b"),
}
# Searched in the raw source: the default T passed beside its key, get("num_train_timesteps", 1000).
RESTATED_RAW = {"T = 1000 (use num_train_timesteps(config))": re.compile(r"num_train_timesteps[\"']\s*,\s*1000\b")}
# Where a convention is defined, or copied on purpose (the pipeline runs without this package; tied above).
DEFINED_HERE = {"lcm_distill/conventions.py", "pipelines/pipeline_lcm.py", "pipelines/pipeline_lcm_sdxl.py"}


def code_only(source: str) -> str:
    """The source with comments and string literals blanked (docstrings may explain a convention)."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING) or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            continue
        out.append(tok.string)
    return " ".join(out)


def offenders(text: str) -> list[str]:
    code = code_only(text)
    hits = [what for what, pattern in RESTATED.items() if pattern.search(code)]
    return hits + [what for what, pattern in RESTATED_RAW.items() if pattern.search(text) and what not in hits]


def test_the_grep_catches_each_restated_form():
    assert offenders("omega = float(g) - 1.0\n") == ["omega = g - 1 (use omega_from_guidance_scale)"]
    assert offenders("g = omega + 1\n") == ["g = omega + 1 (use guidance_scale_from_omega)"]
    assert offenders("scale: float = 8.5\n") == ["the default guidance 8.5 (use DEFAULT_GUIDANCE_SCALE)"]
    assert offenders("if 1000 % n:\n    pass\n") and offenders('T = cfg.get("num_train_timesteps", 1000)\n')
    assert not offenders('"""omega = g - 1, default 8.5"""\nx = 18.5 + len(a) - 1  # g - 1\n')


def test_no_module_restates_a_convention():
    files = [p for d in ("lcm_distill", "pipelines", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    found = {
        str(p.relative_to(ROOT)): hits
        for p in files
        if str(p.relative_to(ROOT)) not in DEFINED_HERE and (hits := offenders(p.read_text()))
    }
    assert not found, f"restated conventions (name them from lcm_distill.conventions): {found}"


def test_dataset_file_suffixes_are_the_loaders_builders():
    """The preflight refuses a data.dataset file by DATASET_FILE_SUFFIXES; data/hf.py opens by FILE_BUILDERS."""
    from lcm_distill.data.hf import FILE_BUILDERS
    from lcm_distill.source_kinds import DATASET_FILE_SUFFIXES

    assert set(FILE_BUILDERS) == set(DATASET_FILE_SUFFIXES)
