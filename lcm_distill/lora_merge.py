"""A LoRA run's merged student/ UNet, written tensor by tensor from the base's safetensors, never whole in memory.

Why: student/ is the fp32 base with the adapters fused (what a user gets from the base + ``load_lora_weights``).
Building it as a module and saving it holds the fp32 UNet and, while safetensors serialises it, a byte copy of it:
2 x 10.3 GB for SDXL, beside the run's bf16 models - the SDXL LoRA rehearsal on a 24 GiB machine was killed there.
Streaming holds one output shard (2 GiB by default) and one base tensor at a time.

The merge is the one diffusers' ``fuse_lora`` performs through PEFT, in fp32: W + (alpha / r) (B @ A); for a
convolution B (out, r, 1, 1) and A (r, in, kh, kw) are flattened to matrices, which is PEFT's delta for a 1x1 B.
The exporter hands ``save_pretrained`` a weightless (meta-device) UNet whose save writes this file set, so the
pipeline folder, model_index.json and card are written by the usual code.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from torch import Tensor

SHARD_BYTES = 2 * 1024**3
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"


def base_weight_files(unet_dir: Path) -> list[Path] | None:
    """The base UNet's safetensors file(s) (one file, or the shards of its index); None when it has neither (a .bin
    checkpoint or a variant: the exporter then merges in memory)."""
    if (unet_dir / WEIGHTS_NAME).is_file():
        return [unet_dir / WEIGHTS_NAME]
    if (unet_dir / INDEX_NAME).is_file():
        shards = sorted(set(json.loads((unet_dir / INDEX_NAME).read_text())["weight_map"].values()))
        return [unet_dir / s for s in shards]
    return None


def lora_pairs(lora_file: Path, prefix: str = "unet.") -> dict[str, tuple[Tensor, Tensor]]:
    """{base weight key: (A, B)} from a diffusers LoRA file (``unet.<module>.lora_A.weight`` / ``lora_B``)."""
    from safetensors.torch import load_file

    state = load_file(str(lora_file))
    pairs = {}
    for key, a in state.items():
        if key.startswith(prefix) and key.endswith(".lora_A.weight"):
            module = key[len(prefix) : -len(".lora_A.weight")]
            pairs[f"{module}.weight"] = (a, state[f"{prefix}{module}.lora_B.weight"])
    if not pairs:
        raise ValueError(f"{lora_file} holds no '{prefix}*.lora_A.weight' adapters to merge.")
    return pairs


def merged_weight(weight: Tensor, pair: tuple[Tensor, Tensor] | None, scale: float) -> Tensor:
    """fp32 W + scale (B @ A) (W alone, in fp32, when the module has no adapter)."""
    w = weight.float()
    if pair is None:
        return w
    a, b = (t.float() for t in pair)
    return w + (b.flatten(1) @ a.flatten(1)).view(w.shape) * scale


def write_merged_unet(skeleton: Any, base_files: list[Path], lora_file: Path, scale: float, out_dir: Path,
                      replace: dict[str, Tensor] | None = None, shard_bytes: int = SHARD_BYTES) -> Path:  # fmt: skip
    """Write ``out_dir`` (config.json + safetensors, sharded like diffusers when over ``shard_bytes``) holding the
    base weights with the adapters of ``lora_file`` merged at ``scale`` = alpha / r, all fp32. ``skeleton``: the
    UNet of the export on the meta device (its config and parameter names); ``replace``: weights taken as given
    (the omega input trained beside the adapters). Every adapter must land on a base weight, every skeleton weight
    must be written, or ValueError."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs, replace = lora_pairs(lora_file), dict(replace or {})
    wanted = set(skeleton.state_dict())
    sources = {}  # key -> file: plan the shards from the headers before reading any tensor
    for path in base_files:
        with safe_open(str(path), "pt") as f:
            sources.update({k: path for k in f.keys() if k in wanted})  # noqa: SIM118 - safe_open is no dict
    missing = wanted - set(sources) - set(replace)
    unused = set(pairs) - set(sources)
    if missing or unused:
        raise ValueError(f"cannot merge {lora_file} into the base UNet: weights missing from the base "
                         f"{sorted(missing)[:5]}, adapters on no base weight {sorted(unused)[:5]}.")  # fmt: skip
    numel = {k: v.numel() for k, v in skeleton.state_dict().items()}
    shards, size = [[]], 0
    for key in sorted(wanted):
        if size and size + 4 * numel[key] > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += 4 * numel[key]
    names = [WEIGHTS_NAME] if len(shards) == 1 else [
        f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    with ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(str(path), "pt")) for path in base_files}
        for name, keys in zip(names, shards, strict=True):
            tensors = {}
            for key in keys:
                if key in replace:
                    tensors[key] = replace[key].float().contiguous()
                else:
                    base = handles[sources[key]].get_tensor(key)
                    tensors[key] = merged_weight(base, pairs.get(key), scale).contiguous()
            save_file(tensors, str(out_dir / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(keys, name))
            del tensors
    if len(names) > 1:
        total = 4 * sum(numel.values())
        (out_dir / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                     indent=2, sort_keys=True) + "\n")  # fmt: skip
    skeleton.save_config(out_dir)
    return out_dir


def streamed_unet(config: dict, writer) -> Any:
    """A weightless UNet (meta device) with ``config``, whose ``save_pretrained(save_directory, **kwargs)`` calls
    ``writer(skeleton, save_directory)``: what DiffusionPipeline.save_pretrained saves in place of a real module."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        skeleton = UNet2DConditionModel.from_config(config)

    def save_pretrained(save_directory, **_: Any) -> None:
        writer(skeleton, Path(save_directory))

    skeleton.save_pretrained = save_pretrained
    return skeleton
