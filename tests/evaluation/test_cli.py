"""python -m lcm_distill.cli.evaluate: errors name the flag at fault; a full run writes the report."""

from __future__ import annotations

import json

import pytest

from lcm_distill.cli.evaluate import main


def _run_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture()
def prompts_file(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("a red digit 1\na blue digit 2\n\na green digit 3\n")
    return p


@pytest.mark.parametrize(
    ("extra", "flag"),
    [(["--steps", "0", "2"], "--steps"),
     (["--num-images", "0"], "--num-images"),
     (["--fid-features", "clip"], "--fid-features"),
     (["--fid-features", "inception"], "--fid-features inception needs --reference"),
     (["--reference", "/nonexistent/ref"], "--reference"),
     (["--guidance", "0.5"], "--guidance"),
     (["--prompt-accuracy", "testbed", "--testbed-dir", "/nonexistent"], "--testbed-dir"),
     (["--cfg-scale", "2"], "--cfg-scale 2.0: only for --kind lcm")],
)
def test_bad_flags_are_named(sd_dir, prompts_file, tmp_path, capsys, extra, flag):
    argv = ["--model", str(sd_dir), "--kind", "teacher-ddim", "--prompts", str(prompts_file),
            "--out", str(tmp_path / "o"), *extra]
    assert flag in _run_error(argv, capsys)


def test_bad_model_and_missing_prompts(tmp_path, capsys, sd_dir):
    assert "--model" in _run_error(["--model", str(tmp_path), "--kind", "lcm", "--prompts", "x", "--out", "o"], capsys)
    err = _run_error(["--model", str(sd_dir), "--kind", "teacher-ddim", "--out", "o"], capsys)
    assert "--reference or --prompts" in err
    assert "--kind" in _run_error(["--model", str(sd_dir), "--kind", "euler", "--out", "o"], capsys)


def test_cli_end_to_end_with_prompts(sd_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["--model", str(sd_dir), "--kind", "teacher-dpmpp", "--prompts", str(prompts_file),
               "--steps", "1", "2", "--guidance", "1", "4", "--num-images", "4", "--batch-size", "2",
               "--fid-features", "none", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "report.json").read_text())
    assert data["scheduler"] == "DPMSolverMultistepScheduler" and data["timestep_spacing"] == "trailing"
    assert len(data["results"]) == 4 and all(r["fid"] is None for r in data["results"])
    assert (out / "quality_vs_steps.png").exists() and (out / "grid_g4.png").exists()
    assert "wrote" in capsys.readouterr().out


def test_lcm_negative_prompt_needs_cfg_and_cfg_is_reported(tmp_path, capsys, lcm_dir, prompts_file):
    argv = ["--model", str(lcm_dir), "--kind", "lcm", "--prompts", str(prompts_file), "--out", str(tmp_path / "o"),
            "--steps", "1", "--num-images", "2", "--batch-size", "2", "--fid-features", "none",
            "--prompt-accuracy", "none"]  # fmt: skip
    assert "add --cfg-scale > 1" in _run_error([*argv, "--negative-prompt", "blue"], capsys)
    assert main([*argv, "--negative-prompt", "blue", "--cfg-scale", "2"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["guidance_mode"] == "omega-embedded+cfg"


def test_default_testbed_dir_is_the_checkouts_from_any_folder(sd_dir, prompts_file, tmp_path, monkeypatch):
    """Run from another folder, the default --testbed-dir still finds the classifier (it was ./assets/testbed)."""
    from lcm_distill.cli.evaluate import build_parser, check_args

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["--model", str(sd_dir), "--kind", "teacher-ddim", "--prompts",
                                      str(prompts_file), "--prompt-accuracy", "testbed", "--out", "o"])  # fmt: skip
    check_args(args)  # raised "--testbed-dir assets/testbed: no classifier/model.safetensors there"
