#!/usr/bin/env bash
# Fixed-omega vs omega-conditioned LCM-LoRA on the digits testbed (needs outputs/testbed-digits: bash scripts/demo.sh).
# One seed, no target network (the recipe before the adapters' EMA). The seeded comparison, 3 seeds, both targets, with
# the spread rule: python benchmarks/lora_target.py --versus (after its two runs; RESULTS.md "seeded").
# Prints nothing itself; reports land in outputs/eval-lora-{fixed,omega}/report.json (table in benchmarks/RESULTS.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=.venv/bin/python
common=(--set model.lora.enabled=true model.lora.rank=16 model.lora.alpha=16 train.ema_decay=0 optim.learning_rate=1e-3 train.max_train_steps=300 train.validation_prompts=[] --overwrite)
$PY train_lcd.py --config configs/lcd_tiny_cpu.yaml "${common[@]}" --set train.output_dir=outputs/lora-fixed objective.omega_fixed=3 
$PY train_lcd.py --config configs/lcd_tiny_cpu.yaml "${common[@]}" --set train.output_dir=outputs/lora-omega model.lora.omega_conditioned=true 
ev=(--reference outputs/testbed-digits --fid-features testbed --prompt-accuracy testbed --num-images 200 --batch-size 50 --seed 0 --threads 2 --steps 1 2 4)
$PY -m lcm_distill.cli.evaluate --model outputs/lora-fixed/student --kind lcm --guidance 4 "${ev[@]}" --out outputs/eval-lora-fixed 
$PY -m lcm_distill.cli.evaluate --model outputs/lora-omega/student --kind lcm --guidance 4 "${ev[@]}" --out outputs/eval-lora-omega 
echo done
