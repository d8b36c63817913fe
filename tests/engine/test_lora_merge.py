"""student/ of a LoRA run with a half-precision base is merged tensor by tensor from the source's safetensors
(lcm_distill/lora_merge.py). It must hold exactly what stock diffusers builds from the fp32 base + lora/ with
load_lora_adapter + fuse_lora (the omega input too, for an omega-conditioned LoRA), in one file or in shards."""

from __future__ import annotations

import pytest
import torch

from lcm_distill.engine import train


def stock_merge(teacher_dir, lora_dir, omega: bool):
    """Base + lora/ fused the stock way (the omega input from lora/'s file onto a fresh cond_proj)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from lcm_distill.export import LORA_WEIGHT_FILE
    from lcm_distill.model_card import OMEGA_INPUT_FILE
    from lcm_distill.models import build_student

    ref = UNet2DConditionModel.from_pretrained(teacher_dir, subfolder="unet")
    if omega:
        ref = build_student(ref, 32, "zero")
        with torch.no_grad():
            ref.time_embedding.cond_proj.weight.copy_(load_file(str(lora_dir / OMEGA_INPUT_FILE))["weight"])
    ref.load_lora_adapter(str(lora_dir), prefix="unet", weight_name=LORA_WEIGHT_FILE)
    ref.fuse_lora()
    ref.unload_lora()
    return ref


def max_diff(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


@pytest.mark.parametrize("omega", [False, True])
def test_streamed_merge_equals_stock_fuse(make_cfg, teacher_dirs, omega, tmp_path):
    from diffusers import UNet2DConditionModel

    from lcm_distill.export import LORA_WEIGHT_FILE
    from lcm_distill.lora_merge import base_weight_files, streamed_unet, write_merged_unet

    args = ["model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=8", "train.ema_decay=0",
            "model.frozen_dtype=bf16", "train.mixed_precision=bf16", "train.export=true", "optim.learning_rate=1e-2"]
    if omega:
        args += ["model.lora.omega_conditioned=true", "model.cond_proj_init=random"]
    result = train(make_cfg(*args))
    out = result.output_dir
    student = UNet2DConditionModel.from_pretrained(out / "student", subfolder="unet")
    assert {p.dtype for p in student.parameters()} == {torch.float32}
    ref = stock_merge(teacher_dirs["epsilon"], out / "lora", omega)
    assert max_diff(student, ref) <= 1e-6
    teacher = UNet2DConditionModel.from_pretrained(teacher_dirs["epsilon"], subfolder="unet")
    if not omega:
        assert max_diff(student, teacher) > 1e-4  # the adapters were merged: the equality above can fail

    # the same merge in shards (diffusers' index layout) loads in stock from_pretrained with the same weights
    skeleton = streamed_unet(dict(student.config), lambda s, d: None)
    files = base_weight_files(teacher_dirs["epsilon"] / "unet")
    given = {"time_embedding.cond_proj.weight": student.time_embedding.cond_proj.weight} if omega else {}
    write_merged_unet(skeleton, files, out / "lora" / LORA_WEIGHT_FILE, 2.0, tmp_path / "sharded", given,
                      shard_bytes=200_000)  # fmt: skip
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 2
    assert (tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert max_diff(UNet2DConditionModel.from_pretrained(tmp_path / "sharded"), student) == 0


def test_streamed_merge_refuses_adapters_that_land_nowhere(make_cfg, teacher_dirs, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from lcm_distill.lora_merge import base_weight_files, streamed_unet, write_merged_unet

    config = dict(UNet2DConditionModel.load_config(teacher_dirs["epsilon"], subfolder="unet"))
    lora = tmp_path / "stray.safetensors"
    save_file({"unet.no_such_block.to_q.lora_A.weight": torch.zeros(4, 8),
               "unet.no_such_block.to_q.lora_B.weight": torch.zeros(8, 4)}, str(lora))  # fmt: skip
    with pytest.raises(ValueError, match="no_such_block"):
        write_merged_unet(streamed_unet(config, lambda s, d: None), base_weight_files(teacher_dirs["epsilon"] / "unet"),
                          lora, 1.0, tmp_path / "out")  # fmt: skip
