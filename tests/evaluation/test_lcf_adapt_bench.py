"""benchmarks/lcf_adapt.py and the new LCF domains: every mode is a valid train_lcf.py command with its switches,
the report states each target as met or missed, and the domains are deterministic, captioned and held out.

The benchmark itself (~20 minutes) is measured in benchmarks/RESULTS.md; here its pieces run on synthetic inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lcm_distill.cli.train import parse_run
from lcm_distill.evaluation.report import EvalReport, ResultRow
from lcm_distill.testbed.domains import DOMAINS, render_domain, write_domain

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("lcf_adapt")


def test_domains_are_deterministic_held_out_and_captioned(tmp_path):
    a, caps = render_domain("shapes", "train", 2)
    b, _ = render_domain("shapes", "train", 2)
    test, _ = render_domain("shapes", "test", 2)
    known, known_caps = render_domain("shapes_known", "train", 2)
    assert a.shape == (60, 16, 16, 3) and np.array_equal(a, b) and not np.array_equal(a, test)
    assert np.array_equal(a, known)  # identical pixels, known-word captions
    assert caps[:2] == ["a red circle", "a red square"] and known_caps[:2] == ["a red digit 0", "a red digit 1"]
    letters, letter_caps = render_domain("letters", "test", 1)
    assert letters.shape == (60, 16, 16, 3) and letter_caps[0] == "a red letter a"
    assert letters[:, 0, 0].mean() > 150 and a[:, 0, 0].mean() < 150  # light vs mid-grey backgrounds, not black
    root = write_domain(tmp_path / "d", "letters", train_per_prompt=1, test_per_prompt=1)
    rows = [json.loads(x) for x in (root / "train" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and (root / "test" / rows[0]["file_name"]).exists()
    with pytest.raises(ValueError, match="domain='fonts'"):
        render_domain("fonts", "train", 1)
    assert set(DOMAINS) == {"letters", "shapes", "shapes_known", "outlines", "photos"}


def test_the_hard_domains_differ_from_the_digits_as_the_issue_asks():
    """outlines: the digits' own captions, but thin coloured outlines on white (the other polarity and stroke);
    photos: crops of scikit-image's bundled photographs (natural statistics), held out by crop, captioned by photo."""
    from lcm_distill.testbed.digits import COLORS
    from lcm_distill.testbed.domains import HARD_DOMAINS, PHOTOS

    assert set(HARD_DOMAINS) == {"outlines", "photos"}
    out, caps = render_domain("outlines", "train", 1)
    assert out.shape == (60, 16, 16, 3) and caps[7] == "a red digit 7" and caps[10] == "a green digit 0"
    assert out[:, 0, 0].min() >= 240  # white background (the digits: black)
    red = out[:10].astype(float)
    ink = (red[..., 0] - red[..., 1:].mean(-1)) > 40  # pixels that show the red stroke
    assert 0.05 < ink.mean() < 0.35, ink.mean()  # a thin outline: far less ink than a filled glyph
    assert COLORS["red"][0] == 1.0  # the test's notion of red
    photos, pcaps = render_domain("photos", "train", 1)
    again, _ = render_domain("photos", "train", 1)
    held, _ = render_domain("photos", "test", 1)
    assert photos.shape == (6 * len(PHOTOS), 16, 16, 3) and np.array_equal(photos, again)
    assert not np.array_equal(photos, held)  # other crops on the held-out split
    assert pcaps[:3] == ["a photo of an astronaut", "a photo of a cup of coffee", "a photo of a cat"]
    assert photos.std(axis=(1, 2, 3)).min() > 3  # textured crops, not flat fields
    grey = [i for i, c in enumerate(pcaps) if c in ("a photo of grass", "a photo of gravel")]
    assert np.abs(photos[grey, ..., 0].astype(int) - photos[grey, ..., 2]).max() == 0  # grey textures stay grey


def test_every_mode_is_a_valid_lcf_run_with_its_switches(bench, tmp_path, capsys):
    plan = bench.Plan(out=tmp_path / "out", student=tmp_path / "lcm", modes=list(bench.MODES))
    work = bench.chains(plan)
    names = [c[0].name for c in work]
    assert names[:len(bench.MODES)] == [f"lcf-letters-{m}" for m in bench.MODES] and "eval-shapes-start" in names
    seen = {}
    for mode in bench.MODES:
        argv = bench.lcf_argv(plan, "shapes", mode, 300, resume=True)
        assert argv[-2:] == ["--resume", "latest"]
        cfg = parse_run(argv[1:], "lcf", argv[0])[1]
        o = cfg.objective
        seen[mode] = (o.curriculum, cfg.train.ema_schedule, cfg.train.ema_decay, o.timestep_sampling, o.loss,
                      o.omega_fixed)  # fmt: skip
        assert cfg.data.dataset == str(plan.domain_dir("shapes") / "train") and cfg.objective.kind == "lcf"
        stage = 50 if mode == "curriculum_stage50" else plan.stage_steps
        assert cfg.train.max_train_steps == 300 and cfg.objective.curriculum_stage_steps == stage
    base = ("fixed", 0.95, "uniform", "huber", None)  # the recipe's
    hi, ph, w5 = ("fixed", 0.95, "high_noise", "huber", None), ("fixed", 0.95, "uniform", "pseudo_huber", None), \
        ("fixed", 0.95, "uniform", "huber", 5.0)
    assert seen == {"paper": ("none", *base), "curriculum": ("doubling", *base),
                    "curriculum_ema": ("doubling", "curriculum", 0.95, "uniform", "huber", None),
                    "mu0": ("none", "fixed", 0.0, "uniform", "huber", None),
                    "curriculum_mu0": ("doubling", "fixed", 0.0, "uniform", "huber", None),
                    "curriculum_stage50": ("doubling", *base),
                    "high_noise": ("none", *hi), "pseudo_huber": ("none", *ph), "omega_fixed": ("none", *w5),
                    "curriculum_high_noise": ("doubling", *hi), "curriculum_pseudo_huber": ("doubling", *ph),
                    "curriculum_omega_fixed": ("doubling", *w5),
                    "curriculum_all": ("doubling", "fixed", 0.95, "high_noise", "pseudo_huber", 5.0)}  # fmt: skip
    ev = bench.domain_evaluate_argv(plan, tmp_path / "lcm", "letters", plan.report("letters", "paper", 100))
    assert ev[ev.index("--reference") + 1] == str(plan.domain_dir("letters"))


def test_a_non_default_stage_length_gets_runs_of_its_own(bench, tmp_path):
    """Runs are reused by folder: a --stage-steps study must not pick up the published curriculum runs."""
    recipe = yaml.safe_load((ROOT / "configs" / "lcf_tiny_cpu.yaml").read_text())
    assert recipe["objective"]["curriculum_stage_steps"] == bench.STAGE_STEPS  # the recipe's runs: plain names
    default = bench.Plan(out=tmp_path, student=tmp_path / "lcm")
    other = bench.Plan(out=tmp_path, student=tmp_path / "lcm", stage_steps=100)
    assert other.run_dir("letters", "paper") == default.run_dir("letters", "paper")  # no curriculum: same run
    assert other.run_dir("letters", "curriculum") != default.run_dir("letters", "curriculum")
    assert default.run_dir("letters", "curriculum").name == "letters-curriculum"  # the published folders
    assert other.run_dir("letters", "curriculum_stage50") == default.run_dir("letters", "curriculum_stage50")


def test_a_run_folder_trained_with_other_settings_is_refused(bench, tmp_path, capsys):
    """A run folder is reused by name; if the recipe or a mode changed since it was trained, the benchmark must say
    so instead of publishing the old run under the new settings."""
    plan = bench.Plan(out=tmp_path / "out", student=tmp_path / "lcm", domains=["shapes"])
    for mode, stage in (("curriculum", bench.STAGE_STEPS), ("paper", 7)):
        run = plan.run_dir("shapes", mode)
        run.mkdir(parents=True)
        cfg = parse_run(bench.lcf_argv(plan, "shapes", mode, 100, resume=False)[1:], "lcf", "train_lcf.py")[1]
        cfg.objective.curriculum_stage_steps = stage  # paper mode: any stage length, it has no curriculum
        (run / "config.resolved.yaml").write_text(cfg.to_yaml())
    assert bench.stale_settings(plan, "shapes", "curriculum") == []
    assert bench.stale_settings(plan, "shapes", "paper") == []
    assert bench.stale_settings(plan, "shapes", "mu0") == []  # never trained: nothing to compare
    other = bench.Plan(out=plan.out, student=plan.student, domains=["shapes"], stage_steps=bench.STAGE_STEPS + 1)
    assert bench.stale_settings(other, "shapes", "curriculum") == []  # a study of its own: another folder
    saved = plan.run_dir("shapes", "curriculum") / "config.resolved.yaml"
    saved.write_text(saved.read_text().replace(f"curriculum_stage_steps: {bench.STAGE_STEPS}",
                                               "curriculum_stage_steps: 50"))  # a recipe changed since the run
    assert bench.stale_settings(plan, "shapes", "curriculum") == [
        f"objective.curriculum_stage_steps: 50 there, {bench.STAGE_STEPS} now"]
    with pytest.raises(SystemExit):
        bench.main(["--out", str(plan.out), "--student", str(plan.student), "--domains", "shapes"])
    err = capsys.readouterr().err
    assert "shapes-curriculum was trained with other settings" in err and "delete it" in err


def _report(path: Path, fids: dict[int, float], accuracy: float | None = None) -> None:
    scores = {} if accuracy is None else {"prompt_accuracy": accuracy, "digit_accuracy": accuracy + 0.1,
                                          "color_accuracy": 0.9}  # fmt: skip
    rows = [ResultRow(steps=s, guidance_scale=6.0, omega=5.0, num_images=4, fid=f, scores=scores)
            for s, f in fids.items()]  # fmt: skip
    EvalReport(model="m", kind="lcm", pipeline="p", scheduler="s", timestep_spacing=None, seed=0,
               image_size=[16, 16], device="cpu", dtype="fp32", feature_extractor="testbed", reference=None,
               scorers=[], results=rows).write(path / "report.json")


def test_report_states_each_target_met_or_missed(bench, tmp_path):
    plan = bench.Plan(out=tmp_path / "out", student=tmp_path / "lcm", domains=["shapes"], modes=["paper", "mu0"],
                      budgets=[100, 200, 300, 1000], eval_steps=[1, 4])  # fmt: skip
    _report(plan.report("shapes", "", 0).parent, {1: 50.0, 4: 40.0}, accuracy=0.2)
    floor = plan.domain_dir("shapes") / "vae_floor.json"
    floor.parent.mkdir(parents=True)
    floor.write_text(json.dumps({"fid": 15.0, "num_images": plan.num_images}))  # the VAE's round trip: best reachable
    paper = {100: 38.0, 200: 36.0, 300: 30.0, 1000: 20.0}  # falls 25% by 300: missed; its own 1000 at 1000
    fast = {100: 25.0, 200: 19.0, 300: 12.0, 1000: 8.0}  # falls 70% by 300; reaches 20 at 200 = 1/5
    for mode, curve in (("paper", paper), ("mu0", fast)):
        for b, f in curve.items():
            _report(plan.report("shapes", mode, b).parent, {1: 60.0 if mode == "paper" else 45.0, 4: f},
                    accuracy=None if mode == "paper" else b / 2000)  # paper: a report without scores
    text = bench.write_report(plan, "python benchmarks/lcf_adapt.py", 1.0)
    assert "| shapes | paper | 50.00, 60.00, 60.00, 60.00, 60.00 | 40.00, 38.00, 36.00, 30.00, 20.00 |" in text
    assert "| shapes | paper | 25.0% (MISSED) | 15.00: 40% | 1000 (MISSED) | 50.00 -> 60.00 (MISSED) |" in text
    assert "| shapes | mu0 | 70.0% (met) | 15.00: 112% | 200 (met) | 50.00 -> 45.00 (met) |" in text
    assert "| shapes | paper | 0.20, n/a, n/a, n/a, n/a | 0.30, n/a, n/a, n/a, n/a | 0.90, n/a, n/a, n/a, n/a |" in text
    assert "| shapes | mu0 | 0.20, 0.05, 0.10, 0.15, 0.50 | 0.30, 0.15, 0.20, 0.25, 0.60 |" in text
    assert (plan.out / "lcf_adapt.png").stat().st_size > 0


def test_cli_names_the_bad_input(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--budgets", "300", "100"])
    assert "--budgets [300, 100]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--eval-steps", "1", "2"])
    assert "--eval-steps" in capsys.readouterr().err


def test_a_study_publishes_into_its_own_section(bench, tmp_path):
    """--section: a --modes study (the candidates) writes its own report, plot and RESULTS.md section and leaves the
    main lcf_adapt section alone."""
    plan = bench.Plan(out=tmp_path / "out", student=tmp_path / "lcm", domains=["shapes"],
                      modes=["paper", "curriculum_high_noise"], budgets=[100, 300], eval_steps=[1, 4],
                      section="lcf_adapt_candidates")  # fmt: skip
    _report(plan.report("shapes", "", 0).parent, {1: 50.0, 4: 40.0})
    (plan.domain_dir("shapes")).mkdir(parents=True)
    (plan.domain_dir("shapes") / "vae_floor.json").write_text(json.dumps({"fid": 20.0, "num_images": 300}))
    for mode, curve in (("paper", {100: 38.0, 300: 30.0}), ("curriculum_high_noise", {100: 20.0, 300: 18.0})):
        for b, f in curve.items():
            _report(plan.report("shapes", mode, b).parent, {1: 45.0, 4: f})
    text = bench.write_report(plan, "python benchmarks/lcf_adapt.py --section lcf_adapt_candidates", 1.0)
    assert "(lcf_adapt_candidates.png)" in text
    row = ("| shapes | curriculum_high_noise | 55.0% (met) | 20.00: 110% | 100 (not measurable: first budget 100 > "
           "300/5)")
    assert row in text
    assert (plan.out / "lcf_adapt_candidates.png").stat().st_size > 0 and not (plan.out / "lcf_adapt.png").exists()
    results = tmp_path / "RESULTS.md"
    results.write_text("<!-- lcf_adapt:begin -->\nmain\n<!-- lcf_adapt:end -->\n")
    bench.publish(text, results, plan.section, "t", [plan.out / "lcf_adapt_candidates.png"])
    new = results.read_text()
    assert "<!-- lcf_adapt:begin -->\nmain\n<!-- lcf_adapt:end -->" in new
    assert "<!-- lcf_adapt_candidates:begin -->" in new


def test_seeds_get_runs_of_their_own_and_the_gap_table_gives_mean_and_spread(bench, tmp_path):
    """--seeds: one run per training seed (train.seed set, seed 0 keeps the published folder names), the FID tables
    average the seeds, and the primary gap-to-floor table gives mean ± std [worst, best] against the 80% target."""
    plan = bench.Plan(out=tmp_path / "out", student=tmp_path / "lcm", domains=["photos"], modes=["curriculum"],
                      budgets=[100, 300], eval_steps=[1, 4], seeds=[0, 1, 2])  # fmt: skip
    names = [c[0].name for c in bench.chains(plan)]
    assert names == ["lcf-photos-curriculum", "lcf-photos-curriculum-seed1", "lcf-photos-curriculum-seed2",
                     "eval-photos-start"]  # fmt: skip
    argv = bench.lcf_argv(plan, "photos", "curriculum", 300, resume=False, seed=2)
    cfg = parse_run(argv[1:], "lcf", argv[0])[1]
    assert cfg.train.seed == 2 and cfg.train.output_dir == str(plan.run_dir("photos", "curriculum", 2))
    assert plan.run_dir("photos", "curriculum", 0).name == "photos-curriculum"
    _report(plan.report("photos", "", 0).parent, {1: 50.0, 4: 40.0})
    plan.domain_dir("photos").mkdir(parents=True)
    (plan.domain_dir("photos") / "vae_floor.json").write_text(json.dumps({"fid": 20.0, "num_images": 300}))
    for seed, at300 in ((0, 22.0), (1, 24.0), (2, 26.0)):  # gap closed 90%, 80%, 70%
        _report(plan.report("photos", "curriculum", 100, seed).parent, {1: 45.0, 4: 30.0})
        _report(plan.report("photos", "curriculum", 300, seed).parent, {1: 44.0, 4: at300})
    assert bench.gap_closed(plan, "photos", "curriculum") == pytest.approx([0.9, 0.8, 0.7])
    text = bench.write_report(plan, "python benchmarks/lcf_adapt.py --seeds 0 1 2", 1.0)
    assert "Training seeds 0, 1, 2: every FID is their mean." in text
    assert "| photos (hard) | curriculum | 40.00 | 20.00 | 24.00 | 80% ± 10% [70%, 90%] | met |" in text
    assert "| photos | curriculum | 50.00, 45.00, 44.00 | 40.00, 30.00, 24.00 |" in text
    _report(plan.report("photos", "curriculum", 300, 0).parent, {1: 44.0, 4: 25.0})  # mean gap 75%: missed
    assert "| 75% ± 5% [70%, 80%] | MISSED |" in bench.write_report(plan, "c", 1.0)
    with pytest.raises(SystemExit):
        bench.main(["--seeds", "0", "0"])
