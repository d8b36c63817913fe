"""The generation command on a tiny exported folder, called in-process (main(argv))."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lcm_distill.cli.generate import main


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_generates_pngs_for_prompts_and_images(lcm_folder, tmp_path, capsys):
    argv = ["--model", str(lcm_folder), "--prompt", "a cat", "--prompt", "a red car", "--steps", "2"]
    assert (
        main([*argv, "--num-images", "2", "--guidance-scale", "8.5", "--seed", "0", "--out", str(tmp_path / "d")]) == 0
    )
    files = sorted((tmp_path / "d").glob("*.png"))
    assert [f.name for f in files] == [
        "00-00-a-cat.png",
        "00-01-a-cat.png",
        "01-00-a-red-car.png",
        "01-01-a-red-car.png",
    ]
    assert all(Image.open(f).size == (16, 16) for f in files)
    assert capsys.readouterr().out.split() == [str(f) for f in files]
    assert main([*argv[:4], "--steps", "2", "--height", "24", "--width", "32", "--out", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").size == (32, 24)


def test_seed_reproducible_and_noise_fraction_flag(lcm_folder, tmp_path):
    base = ["--model", str(lcm_folder), "--prompt", "a cat", "--steps", "4"]
    runs = [("a", []), ("b", []), ("c", ["--seed", "1"]), ("d", ["--noise-fraction", "0"]),
            ("e", ["--negative-prompt", "a dog", "--cfg-scale", "3"])]  # fmt: skip
    for name, extra in runs:
        assert main([*base, *extra, "--out", str(tmp_path / f"{name}.png")]) == 0
    a, b, c, d, e = (pixels(tmp_path / f"{n}.png") for n in "abcde")
    assert np.abs(a - b).max() <= 1  # separate loads: mmap alignment may flip a rounding, nothing more
    assert np.abs(a - c).max() > 10 and np.abs(a - d).max() > 10 and np.abs(a - e).max() > 2


def test_img2img_flags(lcm_folder, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    argv = ["--model", str(lcm_folder), "--prompt", "a cat", "--image", str(tmp_path / "in.png"), "--strength", "0.5"]
    assert main([*argv, "--steps", "2", "--out", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (16, 16)


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--steps", "0"], "--steps 0"),
        (["--steps", "51"], "--steps 51: this model's training grid offers 50 points"),
        (["--num-images", "0"], "--num-images 0"),
        (["--noise-fraction", "1.5"], "--noise-fraction 1.5"),
        (["--strength", "0.5"], "--strength only applies to img2img"),
        (["--height", "15"], "--height 15: use a multiple of this model's VAE factor 2"),
        (["--width", "-8"], "--width -8"),
        (["--timesteps", "999", "500"], "invalid generation settings: timesteps [500] are not on the training grid"),
        (["--image", "/nonexistent.png"], "--image /nonexistent.png: no such file"),
        (["--guidance-scale", "0.5"], "--guidance-scale 0.5: omega = g - 1"),
        (["--negative-prompt", "a dog"], "invalid generation settings: negative_prompt"),
        (["--cfg-scale", "0.5"], "cfg_scale=0.5"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(lcm_folder, tmp_path, capsys, extra, flag):
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(lcm_folder), "--prompt", "a cat", *extra, "--out", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("model", "flag"),
    [("not a model id!", "neither a local folder nor a Hub id"), (".", "has no model_index.json")],
)
def test_bad_model_flag(tmp_path, capsys, model, flag):
    with pytest.raises(SystemExit) as exc:
        main(["--model", model, "--prompt", "a cat", "--out", str(tmp_path / "x.png")])
    assert exc.value.code == 2 and f"--model {model}" in capsys.readouterr().err
