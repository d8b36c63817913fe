"""The data/fast-path config keys: defaults, errors that name the key, and the LAION recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lcm_distill.config import ConfigError, load_config

ROOT = Path(__file__).parents[2]
OK = ["model.teacher=t", "data.dataset=d"]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.source=tfrecord"], "data.source"),
        (["data.source=webdataset"], "data.shards"),  # webdataset without shards
        (["data.shards=/x/{0..3}.tar"], "data.shards"),  # shards with another source
        (["data.source=hf_streaming", "data.max_samples=10"], "data.max_samples"),
        (["data.shuffle_buffer=-1"], "data.shuffle_buffer"),
        (["data.min_width=-5"], "data.min_width"),
        (["data.min_height=1.5"], "data.min_height"),
        (["data.max_pwatermark=1.5"], "data.max_pwatermark"),
        (["data.min_aesthetic=high"], "data.min_aesthetic"),
        (["data.cache_dir=/c"], "data.cache_dir"),  # random flip / crop with a cache
        (["data.cache_dir=/c", "data.center_crop=true"], "data.random_flip"),
        (["model.compile=maybe"], "model.compile"),
        (["model.compile_backend=tvm"], "model.compile_backend"),
        (["train.ema_impl=fused"], "train.ema_impl"),
        (["optim.adamw_impl=apex"], "optim.adamw_impl"),
    ],
)
def test_bad_values_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [*OK, *overrides])


def test_good_values_are_kept():
    cfg = load_config(None, ["model.teacher=t", "data.source=webdataset", "data.shards=/s/{0..9}.tar",
                             "data.shuffle_buffer=0", "data.min_width=512", "data.min_height=512",
                             "data.max_pwatermark=0.5", "data.min_aesthetic=6.5", "model.compile=true",
                             "model.compile_backend=aot_eager", "train.ema_impl=loop"])  # fmt: skip
    d = cfg.data
    assert (d.source, d.shards, d.shuffle_buffer, d.min_width, d.min_height) == ("webdataset", "/s/{0..9}.tar", 0,
                                                                                 512, 512)  # fmt: skip
    assert (d.max_pwatermark, d.min_aesthetic, d.cache_dir) == (0.5, 6.5, None)
    assert cfg.model.compile and cfg.model.compile_backend == "aot_eager" and cfg.train.ema_impl == "loop"
    cached = load_config(None, ["model.teacher=t", "data.cache_dir=/c", "data.center_crop=true",
                                "data.random_flip=false"])  # fmt: skip
    assert cached.data.cache_dir == "/c"  # no data.dataset needed: training reads only the cache
    defaults = load_config(None, OK)
    assert (defaults.data.source, defaults.model.compile, defaults.train.ema_impl) == ("hf", False, "foreach")


@pytest.mark.parametrize(("name", "size", "aesthetic", "prediction"), [("lcd_laion_512", 512, 6.0, "eps"),
                                                                     ("lcd_laion_768", 768, 6.5, "v")])  # fmt: skip
def test_laion_recipes_load_with_the_paper_filters(name, size, aesthetic, prediction):
    path = ROOT / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    d = cfg.data
    assert d.source == "webdataset" and "{" in d.shards and d.resolution == size
    assert (d.min_width, d.min_height, d.min_aesthetic, d.max_pwatermark) == (size, size, aesthetic, 0.5)
    assert ("2-1-base" in cfg.model.teacher) == (prediction == "eps")
    text = path.read_text()
    assert "Dec 2023" in text and "your" in text.lower()  # says the shards are user-supplied
    cached = load_config(path, ["data.cache_dir=/c", "data.center_crop=true", "data.random_flip=false"])
    assert cached.data.cache_dir == "/c"
