"""How the student is spread over processes - DDP, FSDP2 or DeepSpeed ZeRO-2 - as configuration of the one engine.

Every engine trains the same model as DDP at the same global batch (up to the order of reductions); what differs is
where the weights, gradients and optimiser states live:

- ``ddp``: accelerate's DistributedDataParallel; every rank holds everything.
- ``fsdp2``: torch's ``fully_shard`` on each of the UNet's ``_no_split_modules`` blocks (transformer and resnet
  blocks) and on the root; parameters, gradients and AdamW states sharded. The EMA target is sharded the same way and
  updated shard by shard (no communication). The engine applies ``fully_shard`` itself (accelerate's FSDP2 path
  is written for language models: size/transformer policies that cannot wrap the UNet's ModuleLists, fp32 upcasts);
  accelerate still launches the processes, forms the process group, accumulates and keeps RNG states.
- ``zero2``: DeepSpeed ZeRO stage 2 through accelerate; gradients and optimiser states sharded, parameters
  replicated. Its json is derived from the run config (micro batch, accumulation, clipping, precision), never
  taken from the launcher. With ``train.mixed_precision: bf16`` DeepSpeed computes with bf16 weights and keeps fp32
  masters; the EMA target, export and divergence guard read the fp32 masters.

Anything that reads whole weights (validation, export, the divergence guard's max |w|, checkpoints) goes through
:meth:`Parallel.full_module` / :meth:`Parallel.max_abs_weight`, which are collective: every rank calls them.

The engine comes from ``train.distributed`` (auto | ddp | fsdp2 | zero2); ``auto`` follows the launcher
(``accelerate launch --config_file configs/accelerate/{ddp,fsdp2,deepspeed_zero2}.yaml``). Everything that can be
checked without weights is checked by :func:`~lcm_distill.engine.engine_choice.resolve_engine` before any model
loads (engine/engine_choice.py). CPU processes (gloo) run every
engine: ``InitProcessGroupKwargs(backend="gloo")`` is accelerate's public switch for DeepSpeed's CPU accelerator.
Checked against accelerate 1.15.0, torch 2.14.1 and deepspeed 0.19.8.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..config import Config, ConfigError
from .engine_choice import EngineChoice, deepspeed_config

logger = logging.getLogger(__name__)

def _no_split_classes(module: nn.Module) -> tuple[type, ...]:
    names = set(getattr(module, "_no_split_modules", None) or ())
    return tuple({type(m) for m in module.modules() if type(m).__name__ in names})


class Parallel:
    """The run's engine: builds the Accelerator, shards student and target, clips, updates the EMA, gathers whole
    weights. Methods marked collective must be called by every rank."""

    def __init__(self, choice: EngineChoice) -> None:
        self.choice = choice
        self.name = choice.name
        self.accelerator = None
        self._template: nn.Module | None = None  # fsdp2: a meta copy of the plain student, to rebuild whole weights

    # -- set-up ---------------------------------------------------------------------------------------------------
    def build_accelerator(self, cfg: Config):
        """The run's Accelerator for this engine: accumulation, precision, tracker, logging folder."""
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

        from .checkpoint import RunLayout

        logs = RunLayout(cfg.train.output_dir)
        multi = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ
        no_cuda = not torch.cuda.is_available()
        kwargs: dict = dict(
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
            mixed_precision=cfg.train.mixed_precision,
            log_with=None if cfg.train.report_to == "none" else cfg.train.report_to,
            project_config=ProjectConfiguration(project_dir=str(logs.root), logging_dir=str(logs.logs)),
        )
        if self.name == "zero2":
            from accelerate.utils import DeepSpeedPlugin

            for var in ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "ACCELERATE_GRADIENT_CLIPPING",
                        "ACCELERATE_CONFIG_DS_FIELDS"):  # fmt: skip  (checked against the run config already)
                os.environ.pop(var, None)
            world = int(os.environ.get("WORLD_SIZE", "1"))
            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg, world))
            if no_cuda:  # DeepSpeed's CPU accelerator over gloo (accelerate's public backend switch)
                kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        else:
            # fsdp2 is applied by the engine (module docstring): accelerate runs as plain multi-process.
            os.environ.pop("ACCELERATE_USE_FSDP", None)
            # accelerate only forms a CPU process group (gloo) when told cpu=True.
            kwargs["cpu"] = no_cuda and multi
        accelerator = Accelerator(**kwargs)
        self.accelerator = accelerator
        self._check_delivered(accelerator)
        return accelerator

    def _check_delivered(self, accelerator) -> None:
        from accelerate.utils import DistributedType

        if self.name == "zero2" and accelerator.distributed_type != DistributedType.DEEPSPEED:
            raise ConfigError(f"train.distributed=zero2: accelerate started {accelerator.distributed_type}, not "
                              "DeepSpeed; launch with accelerate launch (or torchrun).")  # fmt: skip
        if self.name == "fsdp2" and not torch.distributed.is_initialized():
            raise ConfigError("train.distributed=fsdp2 needs a process group: launch with accelerate launch (or "
                              "torchrun), also for one process.")  # fmt: skip

    def shard(self, models) -> None:
        """fsdp2: ``fully_shard`` the student and its EMA target the same way (before the optimizer is built)."""
        if self.name != "fsdp2":
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        acc = self.accelerator
        mesh = init_device_mesh(acc.device.type, (acc.num_processes,))
        with torch.device("meta"):
            self._template = copy.deepcopy(models.student).to("meta")
        blocks = _no_split_classes(models.student)
        for net in (models.student, models.target):
            if net is None:
                continue
            for m in list(net.modules())[::-1]:  # innermost first: fully_shard nests bottom-up
                if isinstance(m, blocks) and m is not net:
                    fully_shard(m, mesh=mesh, reshard_after_forward=self.choice.reshard_after_forward)
            fully_shard(net, mesh=mesh, reshard_after_forward=self.choice.reshard_after_forward)
        self.wrap_policy = f"fully_shard per {sorted(c.__name__ for c in blocks)} block + root"

    def prepare(self, student: nn.Module, optimizer):
        """accelerate's prepare for DDP / DeepSpeed; fsdp2 modules are already sharded and stay as they are."""
        if self.name == "fsdp2":
            return student, optimizer
        return self.accelerator.prepare(student, optimizer)

    def log_layout(self, student: nn.Module, models) -> str:
        """First log lines: engine, ranks, wrapping, per-rank parameter / optimiser bytes."""
        acc = self.accelerator
        params = list(self.unwrap(student).parameters())
        local = [_local(p) for p in params]
        trainable = sum(t.numel() * 4 for t, p in zip(local, params, strict=True) if p.requires_grad)
        held = sum(t.numel() * t.element_size() for t in local)
        if self.name == "zero2":
            trainable //= acc.num_processes  # fp32 master partition
            wrap = "DeepSpeed ZeRO-2: parameters replicated, gradients and fp32 masters + AdamW states partitioned"
        elif self.name == "fsdp2":
            wrap = self.wrap_policy
        else:
            wrap = "DistributedDataParallel (replicated)" if acc.num_processes > 1 else "single process"
        opt = 2 * trainable + (trainable if self.name == "zero2" else 0)
        line = (f"engine {self.name} ({self.choice.source}), world size {acc.num_processes}, {wrap}; per rank: "
                f"student parameters {held / 2**20:.1f} MiB, optimiser states {opt / 2**20:.1f} MiB")  # fmt: skip
        return line

    # -- the step -------------------------------------------------------------------------------------------------
    def unwrap(self, student: nn.Module) -> nn.Module:
        return student if self.name == "fsdp2" else self.accelerator.unwrap_model(student)

    def autocast(self):
        """The compute-precision context of student/target forwards. DeepSpeed owns precision (accelerate's own
        autocast is off under it): with bf16 its module holds bf16 weights, fed fp32 inputs under this autocast."""
        acc = self.accelerator
        if self.name == "zero2" and acc.state.deepspeed_plugin.deepspeed_config["bf16"]["enabled"]:
            return torch.autocast(acc.device.type, dtype=torch.bfloat16)
        return acc.autocast()

    def clip(self, params: list[nn.Parameter], max_norm: float) -> float | None:
        """Global-norm clipping as DDP does it; DTensor gradients under fsdp2 (torch reduces the shards' norms);
        DeepSpeed clips inside its step with gradient_clipping = optim.max_grad_norm (no norm returned: None).
        Returns the global gradient norm before clipping - logged as grad_norm, the first thing to read when a run
        collapses or diverges."""
        if self.name == "zero2":
            return None
        if self.name == "fsdp2":
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        else:
            norm = self.accelerator.clip_grad_norm_(params, max_norm)
        return None if norm is None else float(norm)

    @torch.no_grad()
    def ema_update(self, target: nn.Module, student: nn.Module, mu: float, impl: str) -> None:
        """theta- <- mu theta- + (1 - mu) theta. fsdp2: on the local shards (same sharding, no communication);
        zero2: from DeepSpeed's fp32 masters (collective)."""
        from .ema import ema_update

        if self.name == "zero2":
            online = _FullFp32View(self.unwrap(student))
            ema_update(target, online, mu, impl)
        elif self.name == "fsdp2":
            ema_update(_LocalView(target), _LocalView(student), mu, impl)
        else:
            ema_update(target, self.unwrap(student), mu, impl)

    # -- whole weights (collective) -------------------------------------------------------------------------------
    def full_state_dict(self, module: nn.Module, student: bool = True) -> dict[str, torch.Tensor]:
        """Collective. The whole fp32 state dict on every rank's CPU (fsdp2: gathered; zero2: fp32 masters)."""
        if self.name == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            sd = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
            return {k: v.detach().cpu() for k, v in sd.items()}
        if self.name == "zero2" and student:
            m = self.unwrap(module)
            full = _FullFp32View(m)
            names = [n for n, _ in m.named_parameters()]
            sd = {n: t.detach().cpu() for n, t in zip(names, full.parameters(), strict=True)}
            sd.update({n: b.detach().cpu() for n, b in m.named_buffers() if n in m.state_dict()})
            return sd
        return {k: v.detach().cpu() for k, v in self.unwrap(module).state_dict().items()}

    def full_module(self, module: nn.Module | None, student: bool = True) -> nn.Module | None:
        """Collective. A plain (unsharded, fp32) module with the whole weights, on the main process only (None
        elsewhere): what validation, export and model cards read. DDP returns the module itself (no copy)."""
        if module is None:
            return None
        if self.name == "ddp" or (self.name == "zero2" and not student):  # replicated plain modules
            return self.unwrap(module)
        sd = self.full_state_dict(module, student)
        if not self.accelerator.is_main_process:
            return None
        if self.name == "fsdp2":
            plain = copy.deepcopy(self._template).to_empty(device=self.accelerator.device)
        else:
            plain = copy.deepcopy(self.unwrap(module))
        plain.load_state_dict(sd)
        return plain.float().eval()

    def max_abs_weight(self, module: nn.Module) -> float:
        """Collective. The student's largest |w| (divergence guard), from whole fp32 weights on every engine."""
        if self.name == "fsdp2":
            local = max((_local(p).abs().max().item() for p in module.parameters() if _local(p).numel()), default=0.0)
            t = torch.tensor([local], device=self.accelerator.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            return float(t.item())
        if self.name == "zero2":
            return max((p.abs().max().item() for p in _FullFp32View(self.unwrap(module)).parameters()), default=0.0)
        return max((p.detach().abs().max().item() for p in self.unwrap(module).parameters() if p.numel()),
                   default=0.0)  # fmt: skip

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def registered_target(self, target: nn.Module | None) -> nn.Module | None:
        """The target accelerate checkpoints itself (replicated engines); fsdp2 saves it in :meth:`save_state`."""
        return None if self.name == "fsdp2" else target

    def save_state(self, folder: Path, student: nn.Module, optimizer, target: nn.Module | None) -> None:
        """Collective. fsdp2: whole student, optimiser and target state (accelerate saves RNG, schedule, engine state);
        the same model.safetensors as a DDP checkpoint. Other engines: accelerate's save_state did it all."""
        if self.name != "fsdp2":
            return
        from safetensors.torch import save_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        model_sd = self.full_state_dict(student)
        optim_sd = get_optimizer_state_dict(student, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                         cpu_offload=True))  # fmt: skip
        target_sd = self.full_state_dict(target) if target is not None else None
        if self.accelerator.is_main_process:
            save_file({k: v.contiguous() for k, v in model_sd.items()}, str(folder / "model.safetensors"))
            torch.save(optim_sd, folder / "optimizer.bin")
            if target_sd is not None:
                save_file({k: v.contiguous() for k, v in target_sd.items()}, str(folder / "target.safetensors"))

    def load_state(self, folder: Path, student: nn.Module, optimizer, target: nn.Module | None) -> None:
        """Collective counterpart of :meth:`save_state`: every rank reads the whole state and keeps its shards."""
        if self.name != "fsdp2":
            return
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(student, load_file(str(folder / "model.safetensors")), options=opts)
        osd = torch.load(folder / "optimizer.bin", map_location="cpu", weights_only=False)
        set_optimizer_state_dict(student, optimizer, osd, options=opts)
        if target is not None:
            set_model_state_dict(target, load_file(str(folder / "target.safetensors")), options=opts)


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p


class _LocalView:
    """A module-like view whose parameters()/buffers() are the local shards of a fully_shard-ed module."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def parameters(self):
        return [_local(p) for p in self.module.parameters()]

    def buffers(self):
        return list(self.module.buffers())


class _FullFp32View:
    """A module-like view of a DeepSpeed ZeRO module whose parameters() are the whole fp32 masters (collective:
    ``deepspeed.utils.safe_get_full_fp32_param`` reduces each parameter's partitions over the ranks)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def parameters(self):
        from deepspeed.utils import safe_get_full_fp32_param

        out = []
        for p in self.module.parameters():
            full = safe_get_full_fp32_param(p) if p.requires_grad else None
            out.append(full if full is not None else p.detach().float())
        return out

    def buffers(self):
        return list(self.module.buffers())
