from pathlib import Path

import pytest

from lcm_distill.cli import main
from lcm_distill.config import Config, ConfigError, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_parse(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_paper_settings_in_sd21_base_config():
    cfg = load_config(Path(__file__).parents[2] / "configs" / "lcd_sd21_base_512.yaml")
    assert (cfg.objective.omega_min, cfg.objective.omega_max, cfg.objective.num_points) == (2.0, 14.0, 50)
    assert cfg.optim.learning_rate == 8e-6 and cfg.train.ema_decay == 0.999943 and cfg.objective.solver == "ddim"


def test_overrides_and_errors_name_the_key(tmp_path):
    ok = ["model.teacher=t", "data.dataset=d"]
    cfg = load_config(None, [*ok, "train.max_train_steps=7", "objective.solver=dpm_solver_pp_2s"])
    assert cfg.train.max_train_steps == 7 and cfg.objective.solver == "dpm_solver_pp_2s"
    assert load_config(None, [*ok, "train.mixed_precision=no"]).train.mixed_precision == "no"  # YAML 1.1 boolean
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        load_config(None, [*ok, "train.max_steps=7"])
    with pytest.raises(ConfigError, match=r"train\.max_train_steps"):
        load_config(None, [*ok, "train.max_train_steps=ten"])
    with pytest.raises(ConfigError, match=r"objective\.solver"):
        load_config(None, [*ok, "objective.solver=euler"])
    with pytest.raises(ConfigError, match=r"objective\.omega_min"):
        load_config(None, [*ok, "objective.omega_min=9", "objective.omega_max=3"])
    with pytest.raises(ConfigError, match=r"model\.teacher"):
        load_config(None, ["data.dataset=d"])
    assert load_config(None, [*ok, "model.lora.enabled=true"]).train.ema_decay == 0.95  # LoRA: an EMA of adapters
    with pytest.raises(ConfigError, match=r"train\.export_from"):
        load_config(None, [*ok, "train.export_from=first"])
    with pytest.raises(ConfigError, match=r"num_points"):
        load_config(None, [*ok, "objective.num_points=30"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, [*ok, "train.max_train_steps"])


def test_cli_dry_run_prints_resolved_config(capsys, tmp_path, teacher_dirs, data_dir):
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{teacher: {teacher_dirs['epsilon']}}}\ndata: {{dataset: {data_dir}, resolution: 16}}\n"
                    f"train: {{output_dir: {tmp_path / 'out'}}}\n")  # fmt: skip
    assert main(["--config", str(path), "--set", "train.seed=5", "--dry-run"], kind="lcd", prog="train_lcd.py") == 0
    printed = capsys.readouterr().out
    assert "seed: 5" in printed and f"teacher: {teacher_dirs['epsilon']}" in printed and "checks passed" in printed
    assert not (tmp_path / "out").exists()  # a dry run changes nothing on disk
    assert main(["--config", str(path), "--set", "objective.kind=lcf"], kind="lcd", prog="train_lcd.py") == 2
    assert "this script trains 'lcd'" in capsys.readouterr().err
    assert main(["--config", str(path), "--set", "nope.x=1"], kind="lcd", prog="train_lcd.py") == 2
    assert "nope" in capsys.readouterr().err
    # --dry-run checks the paths: a missing teacher folder and a missing dataset are config errors naming the key
    assert main(["--config", str(path), "--set", f"model.teacher={tmp_path / 'nope'}", "--dry-run"], kind="lcd",
                prog="train_lcd.py") == 2  # fmt: skip
    assert "model.teacher=" in capsys.readouterr().err
    assert main(["--config", str(path), "--set", f"data.dataset={tmp_path / 'nope'}", "--dry-run"], kind="lcd",
                prog="train_lcd.py") == 2  # fmt: skip
    assert "data.dataset=" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["ddp", "deepspeed_zero2", "fsdp2"])
def test_accelerate_launch_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(Path(__file__).parents[2] / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.num_processes == 8 and cfg.mixed_precision == "bf16"


def test_num_points_is_checked_against_the_teachers_own_T(teacher_dirs, tmp_path):
    """T comes from the teacher's scheduler config (a JSON read, no weights), not a hard-coded 1000."""
    import json
    import shutil

    from lcm_distill.engine import preflight

    teacher = tmp_path / "teacher-T500"
    shutil.copytree(teacher_dirs["epsilon"], teacher)
    sched = teacher / "scheduler" / "scheduler_config.json"
    ok = [f"model.teacher={teacher}", "data.dataset=d"]
    assert load_config(None, [*ok, "objective.num_points=8"]).objective.num_points == 8  # 1000 % 8 == 0
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "num_train_timesteps": 500}))
    with pytest.raises(ConfigError, match=r"objective\.num_points=8 .*T=500"):
        load_config(None, [*ok, "objective.num_points=8"])
    assert load_config(None, [*ok, "objective.num_points=25"]).objective.num_points == 25
    cfg = load_config(None, [*ok, "objective.num_points=25"])
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "num_train_timesteps": 1000 - 1}))
    with pytest.raises(ConfigError, match=r"objective\.num_points"):  # changed after loading: caught before weights
        preflight(cfg)
