"""The offline test kit itself: a real CLIP tokenizer, tiny SD folders, and the layering rule for functional/."""

import subprocess
import sys

import torch

from lcm_distill.testing import build_clip_tokenizer, tiny_unet, vocab_size


def test_full_clip_tokenizer_matches_openai_ids(tmp_path):
    tok = build_clip_tokenizer(tmp_path)
    assert len(tok) == 49408 == vocab_size(48894)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    empty = tok("", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(empty) == 77 and empty[:2] == [49406, 49407] and set(empty[1:]) == {49407}


def test_tiny_tokenizer_shares_ids_of_frequent_tokens(tiny_tokenizer):
    assert len(tiny_tokenizer) == vocab_size(1000)
    ids = tiny_tokenizer("a photo").input_ids
    assert ids[1] == 320  # same id as the full tokenizer for the common token "a</w>"
    assert max(tiny_tokenizer("an unusual zebra-shaped xylophone").input_ids) < len(tiny_tokenizer)


def test_tiny_sd_folder_round_trips(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    assert pipe.scheduler.config.prediction_type in ("epsilon", "v_prediction")
    assert pipe.unet.config.time_cond_proj_dim is None
    assert (tiny_sd_dir / "unet" / "diffusion_pytorch_model.safetensors").exists()
    out = pipe("a red digit", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 16, 16, 3)


def test_student_from_teacher_adds_only_cond_proj():
    teacher = tiny_unet(None)
    student = tiny_unet(32)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert missing == ["time_embedding.cond_proj.weight"] and unexpected == []
    assert student.time_embedding.cond_proj.weight.shape == (32, 32)  # (block_out_channels[0], time_cond_proj_dim)


def test_functional_imports_torch_only():
    code = (
        "import sys, lcm_distill.functional as f; "
        "bad = [m for m in ('accelerate', 'datasets', 'diffusers', 'transformers', 'peft') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
