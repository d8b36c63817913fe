"""The three how-to pages under docs/guides/ run as written: every ```bash command and ```python snippet of each page,
in order, in a scratch folder, offline, against tiny stand-ins filed under the pages' real Hub ids in a Hugging Face
cache laid out as huggingface_hub writes it. What the test changes is listed in SUBSTITUTIONS and SHRINK (and at the
end of each page); the commands it does not run (img2dataset, hf download) are replaced by the test kit's equivalent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lcm_distill.testing.hub_cache import add_to_hub_cache, captioned_parquet

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ROOT / "docs" / "guides"
LAUNCH = "accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 "
SUBSTITUTIONS = {LAUNCH: "python "}  # one CPU process (multi-process runs: tests/engine/test_processes.py)
SHRINK = ["data.resolution=16", "train.per_device_batch_size=2", "train.max_train_steps=2", "data.num_workers=0",
          "data.shuffle_buffer=4", "train.validation_prompts=[]", "train.report_to=none", "train.checkpoint_every=1",
          "objective.curriculum_stage_steps=1", "optim.lr_warmup_steps=0"]  # fmt: skip
NOT_RUN = ("img2dataset ", "hf download")  # made by the test kit instead


def blocks(page: Path, lang: str) -> list[str]:
    """The ```lang blocks of a page; for bash, one entry per command (continuation lines joined)."""
    found = re.findall(rf"```{lang}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    if lang != "bash":
        return found
    commands = []
    for block in found:
        for cmd in block.replace("\\\n", " ").splitlines():
            if cmd.strip() and not cmd.lstrip().startswith("#"):
                commands.append(" ".join(cmd.split()))
    return commands


def shrunk(cmd: str) -> str:
    for old, new in SUBSTITUTIONS.items():
        cmd = cmd.replace(" ".join(old.split()), new.strip())
    if re.search(r"train_lc[df]\.py|lcm-distill-cache", cmd):
        steps = ["train.max_train_steps=3"] if "--resume" in cmd else []
        cmd += " --set " + " ".join([*SHRINK, *steps])
    return re.sub(r"--num-images \d+", "--num-images 4", cmd)


def run(cmd: str, cwd: Path, env: dict) -> str:
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"$ {cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A scratch working folder (configs/ and the entry scripts linked in) and an offline environment whose Hub
    cache holds the pages' model and dataset ids."""
    from lcm_distill.testing import save_tiny_public_lcm, save_tiny_sd

    root = tmp_path_factory.mktemp("guides")
    work, hub, src = root / "work", root / "hub", root / "src"
    work.mkdir()
    for name in ("configs", "train_lcd.py", "train_lcf.py"):
        (work / name).symlink_to(ROOT / name)
    add_to_hub_cache(hub, "stabilityai/stable-diffusion-2-1-base", save_tiny_sd(src / "sd21-base"))
    add_to_hub_cache(hub, "SimianLuo/LCM_Dreamshaper_v7", save_tiny_public_lcm(src / "dreamshaper"))
    captioned_parquet(src / "pokemon", rows=20, seed=3)
    add_to_hub_cache(hub, "reach-vb/pokemon-blip-captions", src / "pokemon", repo_type="dataset")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_CACHE": str(root / "datasets"), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    return {"work": work, "hub": hub, "src": src, "env": env}


def test_guide_distil_sd21_on_laion(sandbox):
    from lcm_distill.testing.img2dataset import laion_rows, write_img2dataset_output

    commands = blocks(GUIDES / "distil-sd21-laion.md", "bash")
    assert commands[0].startswith("img2dataset ") and "--image_size 512" in commands[0]
    write_img2dataset_output(sandbox["work"] / "data" / "laion6plus", laion_rows(12), per_shard=4, image_size=24)
    outputs = [run(shrunk(cmd), sandbox["work"], sandbox["env"]) for cmd in commands[1:]]
    assert "# dry run: checks passed" in outputs[0]
    run_dir = sandbox["work"] / "outputs" / "lcd-laion-512"
    assert "finished at step 2" in outputs[2] and "finished at step 3" in outputs[4]  # the resume after the move
    assert (run_dir / "target" / "model_index.json").is_file() and (run_dir / "run_summary.json").is_file()
    assert (sandbox["work"] / "data" / "laion6plus-cache" / "manifest.json").is_file()
    assert (sandbox["work"] / "samples" / "astronaut.png").is_file()


def test_guide_lcf_on_pokemon(sandbox):
    commands = blocks(GUIDES / "lcf-pokemon-simpsons.md", "bash")
    outputs = [run(shrunk(cmd), sandbox["work"], sandbox["env"]) for cmd in commands]
    work = sandbox["work"]
    assert (work / "data" / "pokemon" / "test" / "metadata.jsonl").is_file()
    assert "# dry run: checks passed" in outputs[1] and "finished at step 2" in outputs[2]
    card = (work / "outputs" / "lcf-pokemon" / "target" / "README.md").read_text()
    assert "safety checker" in card  # the public LCM's checker is not exported, and the card says so
    for name in ("pokemon-before", "pokemon-after"):
        assert (work / "outputs" / "eval" / name / "report.json").is_file()
    assert "fid" in (work / "outputs" / "eval" / "pokemon.md").read_text()


def test_guide_use_an_lcm_from_the_hub(sandbox, tmp_path):
    from lcm_distill.config import load_config
    from lcm_distill.engine import train

    teacher = str(sandbox["src"] / "sd21-base")
    data = sandbox["src"] / "pokemon"
    base = [f"model.teacher={teacher}", f"data.dataset={data}", "model.omega_embed_dim=32", *SHRINK,
            "train.export=true"]  # fmt: skip
    full = train(load_config(None, [*base, f"train.output_dir={tmp_path / 'full'}"]))
    lora = train(load_config(None, [*base, f"train.output_dir={tmp_path / 'lora'}", "model.lora.enabled=true",
                                    "model.lora.rank=4", "train.ema_decay=0"]))  # fmt: skip
    add_to_hub_cache(sandbox["hub"], "you/lcm-sd21-base", full.output_dir / "target")
    add_to_hub_cache(sandbox["hub"], "you/lcm-lora-sd21-base", lora.output_dir / "lora")
    page = GUIDES / "use-an-lcm-from-the-hub.md"
    script = "\n".join(blocks(page, "python")) + "\nprint('images', image.size)\n"
    (sandbox["work"] / "guide_hub.py").write_text(script)
    assert "images (16, 16)" in run("python guide_hub.py", sandbox["work"], sandbox["env"])
    for cmd in blocks(page, "bash"):
        if not cmd.startswith(NOT_RUN):
            run(shrunk(cmd), sandbox["work"], sandbox["env"])
    assert (sandbox["work"] / "samples" / "astronaut.png").is_file()


def test_custom_pipeline_is_always_shown_with_trust_remote_code():
    """diffusers 0.42 refuses custom_pipeline without trust_remote_code=True: every doc that shows one shows both."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for line in page.read_text(encoding="utf-8").splitlines():
            if "custom_pipeline=" in line:
                assert "trust_remote_code=True" in line, f"{page.name}: {line.strip()}"
