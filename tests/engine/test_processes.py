"""Real processes: SIGTERM mid-run, and a 2-process (gloo, CPU) run against 1 process with the same global batch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def _write_config(path: Path, teacher: Path, data: Path, optim: dict | None = None, **train) -> Path:
    cfg = {
        "model": {"teacher": str(teacher), "omega_embed_dim": 32},
        "data": {"dataset": str(data), "resolution": 16, "random_flip": True},
        "objective": {"loss": "huber"},
        "optim": {"learning_rate": 1e-3, **(optim or {})},
        "train": {"report_to": "none", "validation_prompts": [], "checkpoint_every": 1000, "ema_decay": 0.9, **train},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sigterm_writes_a_loadable_checkpoint_and_exits_cleanly(teacher_dirs, data_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _write_config(tmp_path / "c.yaml", teacher_dirs["epsilon"], data_dir, output_dir=str(out),
                        per_device_batch_size=2, max_train_steps=100000)  # fmt: skip
    log = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_lcd.py"), "--config", str(cfg)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=log, text=True)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if re.search(r"\|\s*[2-9]\d*/100000", (tmp_path / "stderr.txt").read_text()):
            break
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=240)
    log.close()
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert "interrupted at step" in stdout
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1 and not list((out / "checkpoints").glob(".tmp-*"))
    step = int(ckpts[0].name.split("-")[1])
    assert step >= 2

    from lcm_distill.config import load_config
    from lcm_distill.engine import train

    resumed = train(load_config(cfg, [f"train.max_train_steps={step + 1}", "train.export=false"]), resume="latest")
    assert resumed.step == step + 1 and resumed.status == "finished"


def test_two_processes_match_one_process_with_the_same_global_batch(teacher_dirs, data_dir, tmp_path):
    # Adam's first steps are sign-like (g / (|g| + eps)): a 1e-9 difference in a near-zero gradient flips an update
    # by 2 lr. A large eps makes the update proportional to g, so the comparison measures the gradients themselves.
    common = dict(max_train_steps=3, export=True, optim={"adam_epsilon": 1.0, "learning_rate": 0.05})
    one = _write_config(tmp_path / "one.yaml", teacher_dirs["v_prediction"], data_dir, output_dir=str(tmp_path / "one"),
                        per_device_batch_size=4, **common)  # fmt: skip
    two = _write_config(tmp_path / "two.yaml", teacher_dirs["v_prediction"], data_dir, output_dir=str(tmp_path / "two"),
                        per_device_batch_size=2, **common)  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29517"]  # fmt: skip
    procs = [
        subprocess.run([sys.executable, str(ROOT / "train_lcd.py"), "--config", str(one)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=420),
        subprocess.run([*launch, str(ROOT / "train_lcd.py"), "--config", str(two)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=420),
    ]  # fmt: skip
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    assert procs[1].stdout.count("finished at step 3") == 1  # one main process reports, not two single runs
    for name in ("student", "target"):
        a = load_file(str(tmp_path / "one" / name / "unet" / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(tmp_path / "two" / name / "unet" / "diffusion_pytorch_model.safetensors"))
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        init = load_file(str(teacher_dirs["v_prediction"] / "unet" / "diffusion_pytorch_model.safetensors"))
        moved = max((a[k] - init.get(k, a[k])).abs().max().item() for k in a)
        # Same samples and noise; only the gradient reduction order differs (fp32 all-reduce vs one batch mean).
        assert worst < 1e-5 < moved, (name, worst, moved)
