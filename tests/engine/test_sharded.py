"""FSDP2 and DeepSpeed ZeRO-2 train the same model as DDP (2 CPU processes, gloo), resume after kill -9 bitwise, and
export folders that stock diffusers loads (engine/parallel.py).

The comparison runs clip with a bound that binds (optim.max_grad_norm 1e-4) and accumulate 2 micro-batches of 1 on
each of 2 processes (global batch 4). Adam's epsilon is raised to 1 so that updates follow the gradients (see
test_processes.py); the runs then move the weights by only ~5e-7, so besides the issue's absolute 1e-5 every
difference is also held to 5% of the movement: a clip on one rank's local norm, or an accumulation that drops a
micro-batch, moves the weights differently by 50-100% of it (both measured while building this)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_processes import ENV, ROOT, _write_config

STEPS = 4
UNET = Path("unet") / "diffusion_pytorch_model.safetensors"


def launch(port: int, mixed_precision: str = "no", config_file: str | None = None) -> list[str]:
    head = [sys.executable, "-m", "accelerate.commands.launch"]
    head += ["--config_file", str(ROOT / config_file)] if config_file else ["--multi_gpu", "--num_machines", "1",
                                                                          "--dynamo_backend", "no"]  # fmt: skip
    return [*head, "--num_processes", "2", "--mixed_precision", mixed_precision, "--main_process_port", str(port)]


def write_run_config(tmp_path: Path, name: str, teacher: Path, data: Path, *, engine: str,
                     mixed_precision: str = "no", **train) -> Path:  # fmt: skip
    train = {"validation_prompts": ["a red digit 3"], "validation_steps": [1], **train}
    return _write_config(tmp_path / f"{name}.yaml", teacher, data, output_dir=str(tmp_path / name),
                         optim={"adam_epsilon": 1.0, "learning_rate": 0.05, "max_grad_norm": 1e-4},
                         per_device_batch_size=1, gradient_accumulation_steps=2, max_train_steps=STEPS,
                         checkpoint_every=2, distributed=engine, mixed_precision=mixed_precision, **train)  # fmt: skip


def run(tmp_path: Path, name: str, teacher: Path, data: Path, *, engine: str, fault: str | None = None,
        resume: bool = False, port: int = 29541, mixed_precision: str = "no", config_file: str | None = None,
        **train) -> subprocess.CompletedProcess:  # fmt: skip
    cfg = write_run_config(tmp_path, name, teacher, data, engine=engine, mixed_precision=mixed_precision, **train)
    env = {**ENV, **({"LCM_DISTILL_FAULT": fault} if fault else {})}
    argv = [*launch(port, mixed_precision, config_file), str(ROOT / "train_lcd.py"), "--config", str(cfg)]
    proc = subprocess.run(argv + (["--resume", "latest"] if resume else []), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if fault is None:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {net: load_file(str(out / net / UNET)) for net in ("student", "target")}


def assert_same_model(a: Path, b: Path, start: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    found = {}
    wa, wb = weights(a), weights(b)
    for net in wa:
        assert wa[net].keys() == wb[net].keys(), net
        worst = max((wa[net][k] - wb[net][k]).abs().max().item() for k in wa[net])
        moved = max((wa[net][k] - start.get(k, wa[net][k])).abs().max().item() for k in wa[net])
        assert worst <= 1e-5 and worst <= 0.05 * moved, (net, worst, moved)
        found[net] = (worst, moved)
    return found


def assert_bitwise(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    for net in wa:
        assert [k for k in wa[net] if not wa[net][k].equal(wb[net][k])] == [], net


@pytest.fixture(scope="module")
def ddp_run(teacher_dirs, data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    run(tmp, "ddp", teacher_dirs["v_prediction"], data_dir, engine="ddp")
    return tmp / "ddp"


@pytest.mark.parametrize("engine", ["fsdp2", "zero2"])
def test_sharded_engine_trains_the_same_model_as_ddp_and_exports_for_stock_diffusers(
    engine, ddp_run, teacher_dirs, data_dir, tmp_path
):
    teacher = teacher_dirs["v_prediction"]
    proc = run(tmp_path, engine, teacher, data_dir, engine=engine)
    assert f"engine {engine} (train.distributed={engine}), world size 2" in proc.stderr
    start = load_file(str(teacher / UNET))
    assert_same_model(ddp_run, tmp_path / engine, start)

    from diffusers import LatentConsistencyModelPipeline

    pipe = LatentConsistencyModelPipeline.from_pretrained(str(tmp_path / engine / "target"))
    out = pipe("a red digit 3", num_inference_steps=2, guidance_scale=4.0, height=16, width=16, output_type="np",
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.images.shape == (1, 16, 16, 3) and (tmp_path / engine / "validation").is_dir()


def test_fsdp2_killed_mid_run_resumes_bitwise(teacher_dirs, data_dir, tmp_path):
    teacher = teacher_dirs["v_prediction"]
    run(tmp_path, "whole", teacher, data_dir, engine="fsdp2", validation_prompts=[])
    killed = run(tmp_path, "chain", teacher, data_dir, engine="fsdp2", fault="step:3", validation_prompts=[])
    assert killed.returncode != 0 and [p.name for p in (tmp_path / "chain" / "checkpoints").iterdir()] == [
        "checkpoint-00000002"
    ]
    resumed = run(tmp_path, "chain", teacher, data_dir, engine="fsdp2", resume=True, validation_prompts=[])
    assert "resumed from" in resumed.stderr
    assert_bitwise(tmp_path / "whole", tmp_path / "chain")


@pytest.mark.slow
def test_zero2_bf16_recipe_path_runs_and_resumes_bitwise(teacher_dirs, data_dir, tmp_path):
    """train.mixed_precision bf16 (every SD recipe) under DeepSpeed's bf16 engine: bf16 weights, fp32 masters."""
    teacher = teacher_dirs["v_prediction"]
    kw = dict(engine="zero2", mixed_precision="bf16", validation_prompts=[])
    run(tmp_path, "whole", teacher, data_dir, **kw)
    run(tmp_path, "chain", teacher, data_dir, fault="step:3", **kw)
    run(tmp_path, "chain", teacher, data_dir, resume=True, **kw)
    assert_bitwise(tmp_path / "whole", tmp_path / "chain")


@pytest.mark.slow
@pytest.mark.parametrize(("config_file", "engine"), [("configs/accelerate/fsdp2.yaml", "fsdp2"),
                                                     ("configs/accelerate/deepspeed_zero2.yaml", "zero2")])  # fmt: skip
def test_shipped_accelerate_configs_work_as_written(config_file, engine, ddp_run, teacher_dirs, data_dir, tmp_path):
    teacher = teacher_dirs["v_prediction"]
    proc = run(tmp_path, engine, teacher, data_dir, engine="auto", config_file=config_file)
    assert f"engine {engine} (accelerate launch config" in proc.stderr
    assert_same_model(ddp_run, tmp_path / engine, load_file(str(teacher / UNET)))


def launch_node(rank: int, port: int, argv: list[str], timeout: int = 60) -> subprocess.Popen:
    """One node's launcher (scripts/launch_node.sh) of a 2-node, 1-process-per-node run on 127.0.0.1."""
    env = {**ENV, "NODES": "2", "NODE_RANK": str(rank), "MAIN_IP": "127.0.0.1", "MAIN_PORT": str(port),
           "PROCS_PER_NODE": "1", "RDZV_TIMEOUT": str(timeout), "PYTHON": sys.executable}  # fmt: skip
    return subprocess.Popen(["bash", str(ROOT / "scripts" / "launch_node.sh"), *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_node_launch_on_one_machine_trains_the_same_model_as_ddp(ddp_run, teacher_dirs, data_dir, tmp_path):
    """README's multi-node recipe, rehearsed: two launchers (machine_rank 0 and 1, one process each) on 127.0.0.1."""
    teacher = teacher_dirs["v_prediction"]
    cfg = write_run_config(tmp_path, "nodes", teacher, data_dir, engine="fsdp2")
    argv = ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train_lcd.py"),
            "--config", str(cfg)]  # fmt: skip
    nodes = [launch_node(rank, 29561, argv, timeout=120) for rank in (0, 1)]
    outs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-3000:] for _, err in outs]
    assert "engine fsdp2 (train.distributed=fsdp2), world size 2" in outs[0][1]
    assert_same_model(ddp_run, tmp_path / "nodes", load_file(str(teacher / UNET)))


def test_a_node_that_cannot_reach_node_0_stops_with_a_message_not_a_hang():
    node = launch_node(1, 29563, ["train_lcd.py", "--config", "unused.yaml"], timeout=3)
    _, err = node.communicate(timeout=60)
    assert node.returncode == 2
    assert "node 1 could not reach node 0 at 127.0.0.1:29563 within 3 s" in err and "MAIN_IP/MAIN_PORT" in err


def test_node_0_alone_stops_at_the_rendezvous_deadline(tmp_path):
    """Without its peer, node 0 waits RDZV_TIMEOUT (torch's default would be 600 s), then names the missing node."""
    node = launch_node(0, 29565, ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no",
                                  str(ROOT / "train_lcd.py"), "--config", "unused.yaml"], timeout=5)  # fmt: skip
    _, err = node.communicate(timeout=120)
    assert node.returncode != 0 and "1/2 clients joined" in err, err[-3000:]
