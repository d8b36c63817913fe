#!/usr/bin/env bash
# One GPU check, <= 8 minutes on one H100/H200, one table per part (paste them into benchmarks/RESULTS.md):
#   1. LCD step samples/s, CUDA max_memory_allocated, UNet TFLOP/s and MFU for SD-2.1-base shapes at 512 px, batch 8
#      (benchmarks/train_step.py --preset sd21): baseline vs each switch and the best combination, and that
#      combination under one-process FSDP2 and ZeRO-2 (bf16)
#   2. optional: diffusers' train_lcm_distill_sd_wds.py as shipped (fp16 autocast) vs ours (bf16), side by side
#      (benchmarks/vs_reference.py --precision gpu), when REFERENCE_SCRIPT=path/to/train_lcm_distill_sd_wds.py is set
#   3. pipeline latency at 1/2/4 steps vs the teacher's 50-step CFG DDIM at 512 px, with the non-UNet share
#   4. one bf16 step of the 768 v-prediction recipe's networks (upcast attention) with a NaN check
#   5. optional (GPU_CHECK_SDXL=1; always with --tiny, on the tiny SDXL kit): SDXL base at its true shapes - the
#      LCM-LoRA step at 1024 px (train_step.py --preset sdxl, rows lora+frozen_bf16) and 1/2/4-step latency at
#      1024 px against the teacher's CFG DDIM (pipeline_latency.py --preset sdxl); building the random-weight SDXL
#      folder (13 GB) takes minutes, so it is off by default
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --tiny     # the same script on CPU with the tiny kit (what the test suite runs)
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3); a .whl/ folder of wheels is installed to
# /tmp/site first when present (on a machine whose image has torch/transformers/accelerate/peft but no diffusers,
# the H200 run of 2026-12-04 needed: diffusers, datasets, dill, multiprocess, webdataset, braceexpand,
# open_clip_torch, ftfy, wcwidth, bitsandbytes - about 51 MB, all at requirements.txt's pins where pinned; the zero2
# row also needs deepspeed (`pip wheel --no-deps --no-build-isolation deepspeed==0.19.8` builds a pure wheel), hjson,
# pydantic, pydantic_core, annotated_types, typing_inspection - without them that row fails alone, with the reason); GPU_CHECK_COMPILE=1 adds the torch.compile row (minutes of compilation);
# OUT (default outputs/gpu-check) receives the tables and JSON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# pipelines/ imports as lcm_distill.pipelines only through the install's package mapping: a bare checkout on
# PYTHONPATH lacks it (the first H200 run died here at part 3), so install the checkout editable, offline, first.
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('lcm_distill.pipelines') is None)"; then
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
fi
OUT="${OUT:-outputs/gpu-check}"
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[gpu_check] $1 ($(( $(date +%s) - start )) s)"; }

if [ "$TINY" = 1 ]; then
  STEP=(--preset tiny --batch-size 2 --steps 2 --warmup 1
        --rows baseline,cache+fused_ema+fused_adam+channels_last,cache+fused_ema+fused_adam+fsdp2,zero2)
  LAT=(--preset tiny --device cpu --lcm-steps 1 2 --teacher-steps 2 --repeats 1 --warmup 0)
  V768=(--preset tiny_v --steps 1 --warmup 1 --rows frozen_bf16)
  SDXL_STEP=(--preset tiny_sdxl --steps 1 --warmup 1 --rows baseline,lora)
  SDXL_LAT=(--preset tiny_sdxl --device cpu --lcm-steps 1 4 --teacher-steps 2 --repeats 1 --warmup 0)
  SDXL=1
else
  rows=baseline,frozen_bf16,cache,fused_ema,fused_adam,channels_last,adam8,cache+frozen_bf16+fused_ema+fused_adam
  rows+=,cache+frozen_bf16+fused_ema+fused_adam+channels_last,cache+frozen_bf16+fused_ema+adam8
  # one-process FSDP2 and DeepSpeed ZeRO-2 (bf16 engine) rows: what the wrapping costs before a second GPU helps
  rows+=,cache+frozen_bf16+fused_ema+fused_adam+fsdp2,cache+frozen_bf16+fused_ema+fused_adam+zero2
  [ "${GPU_CHECK_COMPILE:-0}" = 1 ] && rows+=,cache+frozen_bf16+fused_ema+fused_adam+compile
  STEP=(--preset sd21 --batch-size 8 --steps 10 --warmup 2 --rows "$rows" --workdir "$OUT/sd21")
  LAT=(--preset sd21-base --device cuda --dtype fp16 --repeats 3 --warmup 1)
  V768=(--preset sd21_768 --steps 1 --warmup 1 --rows frozen_bf16 --workdir "$OUT/sd21_768")
  SDXL_STEP=(--preset sdxl --batch-size 2 --steps 5 --warmup 2 --rows lora+frozen_bf16 --workdir "$OUT/sdxl")
  SDXL_LAT=(--preset sdxl --device cuda --dtype fp16 --lcm-steps 1 2 4 --teacher-steps 25 --repeats 3 --warmup 1)
  SDXL="${GPU_CHECK_SDXL:-0}"
fi

stamp "1/4 LCD step: ${STEP[*]}"
"$PY" benchmarks/train_step.py "${STEP[@]}" --json "$OUT/train_step.json" | tee "$OUT/train_step.md"

if [ -n "${REFERENCE_SCRIPT:-}" ]; then
  stamp "2/4 vs the reference script ($REFERENCE_SCRIPT)"
  if [ "$TINY" = 1 ]; then REF=(--configs tiny --precision fp32 --steps-short 2 --steps-long 3 --repeats 1)
  else REF=(--configs sd21 --precision gpu --steps-short 5 --steps-long 15 --repeats 1); fi
  "$PY" benchmarks/vs_reference.py --reference-script "$REFERENCE_SCRIPT" --out "$OUT/vs-reference" "${REF[@]}" \
    | tee "$OUT/vs_reference.md"
else
  stamp "2/4 vs the reference script: skipped (set REFERENCE_SCRIPT=.../train_lcm_distill_sd_wds.py)"
fi

stamp "3/4 pipeline latency: ${LAT[*]}"
"$PY" benchmarks/pipeline_latency.py "${LAT[@]}" | tee "$OUT/latency.md"

stamp "4/4 one bf16 step of the 768 v-prediction networks (train_step aborts on a non-finite loss)"
"$PY" benchmarks/train_step.py "${V768[@]}" --json "$OUT/v768.json" | tee "$OUT/v768.md"
"$PY" - "$OUT/v768.json" <<'EOF'
import json, math, sys
r = json.load(open(sys.argv[1]))["results"][0]
ok = "error" not in r and math.isfinite(r["loss"])
print(f"768 v-prediction bf16 step: loss {r.get('loss')} -> {'finite' if ok else 'NaN/failed'}")
sys.exit(0 if ok else 1)
EOF
if [ "$SDXL" = 1 ]; then
  stamp "5/5 SDXL: LCM-LoRA step (${SDXL_STEP[*]}) and latency (${SDXL_LAT[*]})"
  "$PY" benchmarks/train_step.py "${SDXL_STEP[@]}" --json "$OUT/sdxl_step.json" | tee "$OUT/sdxl_step.md"
  "$PY" benchmarks/pipeline_latency.py "${SDXL_LAT[@]}" | tee "$OUT/sdxl_latency.md"
else
  stamp "5/5 SDXL: skipped (GPU_CHECK_SDXL=1 runs it)"
fi
stamp "done"
