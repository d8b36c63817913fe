"""Shared fixtures: offline environment and the tiny SD test kit (lcm_distill.testing)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# Before anything imports huggingface_hub: a stray hub lookup must fail at once, not after ~23 s of retries.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# The checkout on sys.path: benchmarks/ is a package the tests import like the scripts do (benchmarks.harness).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: benchmarks/<name>.py as the module ``benchmarks.<name>`` - the one way tests load
    a benchmark script."""
    return lambda name: importlib.import_module(f"benchmarks.{name}")


# Tiny models are dispatch-bound: one thread is as fast alone and 5-15x faster on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizer")


@pytest.fixture(scope="session")
def tiny_tokenizer(tokenizer_dir):
    from lcm_distill.testing import tiny_tokenizer as build

    return build(tokenizer_dir)


@pytest.fixture(scope="session")
def sd_scheduler_config():
    from lcm_distill.testing import tiny_scheduler_config

    return tiny_scheduler_config("epsilon")


@pytest.fixture(scope="session", params=["epsilon", "v_prediction"])
def tiny_sd_dir(request, tmp_path_factory):
    """A tiny diffusers SD teacher folder on disk, for eps and v prediction."""
    from lcm_distill.testing import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("sd") / f"tiny-sd-{request.param}", request.param)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps a process-wide singleton; in-process runs with other precisions need it reset."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
    GradientState._reset_state()
