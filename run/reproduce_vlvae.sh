#!/usr/bin/env bash
# Reproduce the VLVAE paper's Tables 1 and 2 with one preset (default cpu) on Two Objects:
# the base VLVAE (trained if missing), q_True, q_Agg and the learned prior with 3 seeds each,
# then run/evaluate.py. Usage: bash run/reproduce_vlvae.sh [preset] [extra svi.py flags...]
set -euo pipefail
preset="${1:-cpu}"
shift || true
cd "$(dirname "$0")/.."
for seed in 0 1 2; do
  for guide in text_true text_agg prior_agg; do
    out="runs/vlvae-${guide}-${preset}-s${seed}"
    [ -d "$out" ] || python run/svi.py --model vlvae --guide "$guide" --preset "$preset" --seed "$seed" \
      --out "$out" --no-progress "$@"
  done
done
python run/evaluate.py --base "runs/vlvae-image-${preset}" \
  --text-true runs/vlvae-text_true-"${preset}"-s{0,1,2} \
  --text-agg runs/vlvae-text_agg-"${preset}"-s{0,1,2} \
  --prior runs/vlvae-prior_agg-"${preset}"-s{0,1,2} \
  --out "runs/eval-${preset}"
