#!/usr/bin/env bash
# The main job on a laptop CPU, from a fresh clone: set up, render the digits testbed, distil the bundled tiny
# teacher (assets/testbed/teacher-v) with train_lcd.py, then evaluate the LCM at 1/2/4 steps beside the teacher's
# 50-step DDIM (domain FID and prompt accuracy) and print the table. Outputs land in outputs/demo/.
# Extra arguments go to train_lcd.py, e.g.  bash scripts/demo.sh --set train.max_train_steps=50
# Each run starts the demo afresh (--overwrite replaces the previous demo run in outputs/demo/lcd).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
PY="${LCM_DISTILL_VENV:-.venv}/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=outputs/demo
N_IMAGES="${DEMO_NUM_IMAGES:-200}"
GUIDANCE="${DEMO_GUIDANCE:-4}"

TEACHER=assets/testbed/teacher-v
start=$(date +%s)
"$PY" -m lcm_distill.testbed.render --out outputs/testbed-digits
if [ ! -f "$TEACHER/model_index.json" ]; then
  # Without the trained testbed teacher the loop still runs end to end on a random-weight kit teacher,
  # but quality numbers would mean nothing, so the evaluation is skipped.
  echo "[demo] $TEACHER is missing: using a random-weight tiny teacher (python -m lcm_distill.testing); no metrics"
  TEACHER="$OUT/kit-teacher"
  [ -f "$TEACHER/model_index.json" ] || "$PY" -m lcm_distill.testing --out "$TEACHER"
  "$PY" train_lcd.py --config configs/lcd_tiny_cpu.yaml --set train.output_dir="$OUT/lcd" --overwrite \
    --set model.teacher="$TEACHER" "$@"
  echo "[demo] training took $(( $(date +%s) - start )) s; validation grids in $OUT/lcd/validation/"
  exit 0
fi
"$PY" train_lcd.py --config configs/lcd_tiny_cpu.yaml --set train.output_dir="$OUT/lcd" --overwrite "$@"
t_train=$(date +%s)
common=(--reference outputs/testbed-digits --fid-features testbed --prompt-accuracy testbed
        --num-images "$N_IMAGES" --batch-size 50 --guidance "$GUIDANCE" --seed 0 --threads 2)
"$PY" -m lcm_distill.cli.evaluate --model "$OUT/lcd/target" --kind lcm --steps 1 2 4 "${common[@]}" --out "$OUT/eval-lcm"
"$PY" -m lcm_distill.cli.evaluate --model "$TEACHER" --kind teacher-ddim --steps 1 2 4 50 "${common[@]}" \
  --out "$OUT/eval-teacher-ddim"
"$PY" - "$OUT" <<'PYEOF'
import sys
from pathlib import Path

from lcm_distill.evaluation.report import load_report, markdown_table

out = Path(sys.argv[1])
reports = [load_report(out / d / "report.json") for d in ("eval-lcm", "eval-teacher-ddim")]
text = "## Domain FID (lower is better)\n\n" + markdown_table(reports, "fid")
text += "\n## Prompt accuracy (higher is better)\n\n" + markdown_table(reports, "prompt_accuracy")
(out / "metrics.md").write_text(text)
print(text)
PYEOF
end=$(date +%s)
echo "[demo] training $((t_train - start)) s, total $((end - start)) s"
echo "[demo] image grids: $OUT/lcd/validation/ and $OUT/eval-*/grid_*.png; table: $OUT/metrics.md"
