"""The crash matrix (slow: real processes). A run killed with SIGKILL at every dangerous point - mid-step, inside
accelerate's save_state, with a complete but unrenamed checkpoint, after the rename before rotation, halfway through
the export, one of two workers - and resumed with ``--resume latest`` each time ends with weights bitwise equal to
an uninterrupted run. The kill points come from the LCM_DISTILL_FAULT hook (lcm_distill/engine/faults.py), so the
crash lands inside a save every time instead of racing a timer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_processes import ENV, ROOT, _write_config

pytestmark = pytest.mark.slow
STEPS = 6
LAUNCH2 = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29533"]  # fmt: skip


def _run(cfg: Path, fault: str | None = None, resume: bool = False, launch: list[str] | None = None):
    env = {**ENV, **({"LCM_DISTILL_FAULT": fault} if fault else {})}
    argv = [*(launch or [sys.executable]), str(ROOT / "train_lcd.py"), "--config", str(cfg)]
    argv += ["--resume", "latest"] if resume else []
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _config(tmp_path: Path, name: str, teacher_dirs, data_dir) -> Path:
    return _write_config(tmp_path / f"{name}.yaml", teacher_dirs["v_prediction"], data_dir,
                         output_dir=str(tmp_path / name), per_device_batch_size=2, max_train_steps=STEPS,
                         checkpoint_every=1, checkpoints_keep=2, export=True)  # fmt: skip


def _weights(out: Path) -> dict[str, dict]:
    unet = Path("unet") / "diffusion_pytorch_model.safetensors"
    return {net: load_file(str(out / net / unet)) for net in ("student", "target")}


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    for net in a:
        assert a[net].keys() == b[net].keys()
        differ = [k for k in a[net] if not a[net][k].equal(b[net][k])]
        assert not differ, (net, differ[:5])


def test_kill_9_at_every_point_then_resume_equals_an_uninterrupted_run(teacher_dirs, data_dir, tmp_path):
    ref = _run(_config(tmp_path, "ref", teacher_dirs, data_dir))
    assert ref.returncode == 0, ref.stderr[-3000:]
    cfg = _config(tmp_path, "faulty", teacher_dirs, data_dir)
    ckpts = tmp_path / "faulty" / "checkpoints"
    # (fault, what the checkpoints folder must hold after the kill); each run after the first resumes the last one
    chain = [
        ("step:2", ["checkpoint-00000001"]),  # step 2 trained, never saved
        ("save_state:3", ["checkpoint-00000001", "checkpoint-00000002", ".tmp-checkpoint-00000003"]),
        ("manifest:4", ["checkpoint-00000002", "checkpoint-00000003", ".tmp-checkpoint-00000004"]),
        ("rename:5", ["checkpoint-00000003", "checkpoint-00000004", "checkpoint-00000005"]),  # not rotated yet
        ("export:6", ["checkpoint-00000005", "checkpoint-00000006"]),
    ]
    for i, (fault, expected) in enumerate(chain):
        p = _run(cfg, fault, resume=i > 0)
        assert p.returncode == -9, (fault, p.returncode, p.stderr[-3000:])
        assert sorted(c.name for c in ckpts.iterdir()) == sorted(expected), fault
    assert (tmp_path / "faulty" / "student").is_dir() and not (tmp_path / "faulty" / "target").exists()
    last = _run(cfg, resume=True)
    assert last.returncode == 0, last.stderr[-3000:]
    assert sorted(c.name for c in ckpts.iterdir()) == ["checkpoint-00000005", "checkpoint-00000006"]
    _assert_bitwise_equal(_weights(tmp_path / "ref"), _weights(tmp_path / "faulty"))


def test_one_of_two_workers_killed_then_resumed_equals_an_uninterrupted_two_process_run(teacher_dirs, data_dir,
                                                                                         tmp_path):  # fmt: skip
    ref = _run(_config(tmp_path, "ref", teacher_dirs, data_dir), launch=LAUNCH2)
    assert ref.returncode == 0, ref.stderr[-3000:]
    cfg = _config(tmp_path, "faulty", teacher_dirs, data_dir)
    killed = _run(cfg, "step:3:1", launch=LAUNCH2)  # rank 1 dies after step 3; the launcher takes rank 0 down
    assert killed.returncode != 0
    assert [c.name for c in (tmp_path / "faulty" / "checkpoints").glob("checkpoint-*")]  # something survived
    last = _run(cfg, resume=True, launch=LAUNCH2)
    assert last.returncode == 0, last.stderr[-3000:]
    _assert_bitwise_equal(_weights(tmp_path / "ref"), _weights(tmp_path / "faulty"))


def test_sigterm_to_a_two_process_launcher_checkpoints_every_worker(teacher_dirs, data_dir, tmp_path):
    """What README says of SIGTERM under accelerate launch: the workers checkpoint and report; the launcher exits 1."""
    import re
    import signal
    import time

    cfg = _write_config(tmp_path / "c.yaml", teacher_dirs["epsilon"], data_dir, output_dir=str(tmp_path / "run"),
                        per_device_batch_size=2, max_train_steps=100000)  # fmt: skip
    err = tmp_path / "stderr.txt"
    with open(err, "w") as log:
        proc = subprocess.Popen([*LAUNCH2, str(ROOT / "train_lcd.py"), "--config", str(cfg)], cwd=ROOT, env=ENV,
                                stdout=subprocess.PIPE, stderr=log, text=True)  # fmt: skip
        deadline = time.time() + 300
        progressed = re.compile(r"\|\s*[2-9]\d*/100000")
        while time.time() < deadline and proc.poll() is None and not progressed.search(err.read_text()):
            time.sleep(0.5)
        assert proc.poll() is None, err.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1  # torch elastic's own status for a signal; if this changes, update README
    step = int(re.search(r"interrupted at step (\d+)", stdout).group(1))
    assert [c.name for c in (tmp_path / "run" / "checkpoints").iterdir()] == [f"checkpoint-{step:08d}"]
