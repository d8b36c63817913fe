"""run_evaluation end to end on a tiny pipeline: JSON schema, plot, grids, markdown table."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from PIL import Image

from lcm_distill.evaluation import (
    EvalConfig,
    configure_scheduler,
    extract_features,
    load_report,
    markdown_table,
    plot_quality_vs_steps,
    run_evaluation,
    save_grid,
    validate_report,
)

PROMPTS = ["a red digit 1", "a blue digit 2", "a green digit 3", "a cyan digit 4", "a red digit 5", "a blue digit 6"]


class MeanRed:
    """A toy prompt scorer: how red each image is (tests only need a deterministic number per image)."""

    name = "redness"

    def __call__(self, images, prompts):
        return images[:, 0].mean(dim=(1, 2))


@pytest.fixture(scope="module")
def report_dir(tiny_pipe, tiny_extractor, tmp_path_factory):
    configure_scheduler(tiny_pipe, "teacher-ddim")
    out = tmp_path_factory.mktemp("eval")
    ref = extract_features(tiny_extractor, torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    cfg = EvalConfig(steps=(1, 2), guidance_scales=(1.0, 3.0), batch_size=3, grid_prompts=4, kid_subsets=5)
    report = run_evaluation(tiny_pipe, PROMPTS, cfg, out, tiny_extractor, ref, [MeanRed()],
                            {"model": "tiny", "kind": "teacher-ddim", "timestep_spacing": "trailing",
                             "reference": {"path": "random", "split": "test", "num_images": 12}})
    return out, report


def test_report_files_and_schema(report_dir):
    out, _ = report_dir
    data = load_report(out / "report.json")
    assert data["kind"] == "teacher-ddim" and data["scheduler"] == "DDIMScheduler"
    assert data["feature_extractor"] == "tiny-random-conv" and data["scorers"] == ["redness"]
    assert data["image_size"] == [16, 16]
    assert [(r["guidance_scale"], r["steps"]) for r in data["results"]] == [(1.0, 1), (1.0, 2), (3.0, 1), (3.0, 2)]
    for r in data["results"]:
        assert r["omega"] == r["guidance_scale"] - 1
        assert r["num_images"] == len(PROMPTS)
        assert r["fid"] is not None and r["fid"] >= 0 and r["kid_mean"] is not None
        assert 0 <= r["scores"]["redness"] <= 1
        assert r["latency"]["calls"]["unet"] == r["steps"] * 2  # 6 prompts / batch 3
        assert r["grid"] == f"grid_g{r['guidance_scale']:g}.png"
    for g in ("1", "3"):
        with Image.open(out / f"grid_g{g}.png") as im:
            assert im.size[0] > 4 * 64 and im.size[1] >= 2 * 64  # 4 columns x 2 rows of >=64 px cells
    with Image.open(out / "quality_vs_steps.png") as im:
        assert im.format == "PNG" and im.size[0] > 200


def test_more_steps_change_images_but_same_seed(report_dir):
    _, report = report_dir
    fids = {(r.guidance_scale, r.steps): r.fid for r in report.results}
    assert len(set(fids.values())) == 4


def test_validate_report_names_the_bad_key(report_dir):
    out, _ = report_dir
    data = json.loads((out / "report.json").read_text())
    bad = copy.deepcopy(data)
    del bad["kind"]
    with pytest.raises(ValueError, match="'kind'"):
        validate_report(bad)
    bad = copy.deepcopy(data)
    bad["results"][0]["steps"] = "two"
    with pytest.raises(ValueError, match=r"results\[0\]\['steps'\]"):
        validate_report(bad)
    bad = copy.deepcopy(data)
    del bad["results"][1]["latency"]["unet_s"]
    with pytest.raises(ValueError, match="unet_s"):
        validate_report(bad)


def test_plot_several_reports_and_table(report_dir, tmp_path):
    out, _ = report_dir
    a = load_report(out / "report.json")
    b = copy.deepcopy(a)
    b["kind"] = "lcm"
    path = plot_quality_vs_steps([a, b], tmp_path / "cmp.png", title="cmp")
    assert path.exists() and path.stat().st_size > 1000
    table = markdown_table([a, b], "fid", guidance_scale=3.0)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| method | g | 1 step | 2 steps")
    assert len(lines) == 4 and "(lcm)" in lines[3]


def test_save_grid_labels_and_upscale(tmp_path):
    path = save_grid(torch.rand(6, 3, 8, 8), tmp_path / "g.png", nrow=3, min_cell=32, row_labels=["a", "b"])
    with Image.open(path) as im:
        assert im.size == (70 + 3 * 34 + 2, 2 * 34 + 2)


def test_eval_config_rejects_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        EvalConfig(steps=(0, 2))


def test_compare_command(report_dir, tmp_path, capsys):
    from lcm_distill.evaluation.compare import main

    out, _ = report_dir
    assert main([str(out / "report.json"), str(out / "report.json"), "--metrics", "fid", "redness", "latency",
                 "--out", str(tmp_path / "t.md"), "--plot", str(tmp_path / "p.png")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert text.count("| method |") == 3 and "**redness**" in text
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.json")])
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("omega_dim", [32, None])
def test_report_says_how_guidance_is_used_and_never_records_an_ignored_value(tiny_pipe, tmp_path, omega_dim):
    from lcm_distill.pipelines import LCMPipeline

    from lcm_distill.testing import tiny_components

    comps = tiny_components(tmp_path / "c", "epsilon", time_cond_proj_dim=omega_dim, scheduler="lcm")
    pipe = LCMPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    cfg = EvalConfig(steps=(1, 2), guidance_scales=(4.0, 9.0), batch_size=2, warmup=False)
    report = run_evaluation(pipe, PROMPTS[:2], cfg)
    if omega_dim is None:  # a merged LCM-LoRA: no omega input, no CFG pass
        assert report.guidance_mode == "unused"
        assert [(r.steps, r.guidance_scale, r.omega) for r in report.results] == [(1, 1.0, 0.0), (2, 1.0, 0.0)]
    else:
        assert report.guidance_mode == "omega-embedded"
        assert sorted({(r.guidance_scale, r.omega) for r in report.results}) == [(4.0, 3.0), (9.0, 8.0)]
    configure_scheduler(tiny_pipe, "teacher-ddim")
    assert run_evaluation(tiny_pipe, PROMPTS[:2], EvalConfig(steps=(1,), guidance_scales=(3.0,), batch_size=2,
                                                             warmup=False)).guidance_mode == "cfg"  # fmt: skip
