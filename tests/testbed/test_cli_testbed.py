"""The evaluation command on the testbed: domain FID and prompt accuracy picked automatically."""

from __future__ import annotations

import json

from lcm_distill.cli.evaluate import main


def test_evaluate_teacher_on_testbed(assets_dir, digits_dir, tmp_path):
    out = tmp_path / "eval"
    rc = main(["--model", str(assets_dir / "teacher-eps"), "--kind", "teacher-ddim", "--reference", str(digits_dir),
               "--testbed-dir", str(assets_dir), "--steps", "1", "8", "--guidance", "5", "--num-images", "60",
               "--batch-size", "60", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "report.json").read_text())
    assert data["feature_extractor"] == "testbed-digits-classifier"
    assert data["scorers"] == ["prompt_accuracy"] and data["reference"]["num_images"] > 2000
    one, eight = data["results"]
    assert {"prompt_accuracy", "digit_accuracy", "color_accuracy"} <= set(one["scores"])
    # more DDIM steps: closer to the data and more prompt-faithful (a 1-step DDIM sample is a blurry mean)
    assert eight["fid"] < one["fid"]
    assert eight["scores"]["prompt_accuracy"] >= one["scores"]["prompt_accuracy"]
