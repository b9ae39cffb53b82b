#!/usr/bin/env bash
# Reproduce the VLVAE paper's Tables 1 and 2 with one preset (default cpu) on Two Objects:
# the base VLVAE (trained if missing), q_True, q_Agg, the learned prior and the text-weighted
# q_True (--text-true-weighted) with 3 seeds each, then run/evaluate.py twice (the tables; the
# weighted q_True in Table 1's place). The evaluations use 200 validation pairs, K = 50, and
# q(z|x) semi-amortised by 25 refinement steps (ceiling and proposal), as in docs/reproduction.md.
# OBJECTIVES="kl mvae mmvae" also trains those schemes, each its own whole VLVAE (JMVAE-kl, MVAE,
# MMVAE; hours a seed on 2 CPU cores), 3 seeds each, as more columns of Table 1 (--runs).
# Run again after a stop (Ctrl-C or SIGTERM checkpoints a run): finished runs are kept, a stopped one resumes.
# Usage: [OBJECTIVES="kl mvae mmvae"] bash run/reproduce_vlvae.sh [preset] [extra svi.py flags...]
set -euo pipefail
preset="${1:-cpu}"
shift || true
cd "$(dirname "$0")/.."
read -r -a objectives <<< "${OBJECTIVES:-}"
train() {  # train OUT [svi.py flags...]; where OUT exists, --resume: the rest of a stopped run, nothing for a finished one
  local out="$1"; shift
  local resume=
  [ -d "$out" ] && resume=--resume
  python run/svi.py --model vlvae --preset "$preset" --out "$out" --no-progress "$@" $resume
}
for seed in 0 1 2; do
  for guide in text_true text_agg prior_agg; do
    train "runs/vlvae-${guide}-${preset}-s${seed}" --guide "$guide" --seed "$seed" "$@"
  done
  train "runs/vlvae-text_true_weighted-${preset}-s${seed}" --guide text_true --text-true-weighted --seed "$seed" "$@"
  for guide in "${objectives[@]}"; do
    train "runs/vlvae-${guide}-${preset}-s${seed}" --guide "$guide" --seed "$seed" "$@"
  done
done
runs=()
for guide in "${objectives[@]}"; do
  runs+=(runs/vlvae-"${guide}"-"${preset}"-s{0,1,2})
done
evaluate=(python run/evaluate.py --base "runs/vlvae-image-${preset}" --num-points 200 --particles 50 --refine-steps 25)
"${evaluate[@]}" --text-true runs/vlvae-text_true-"${preset}"-s{0,1,2} \
  --text-agg runs/vlvae-text_agg-"${preset}"-s{0,1,2} \
  --prior runs/vlvae-prior_agg-"${preset}"-s{0,1,2} \
  ${runs[@]:+--runs "${runs[@]}"} --out "runs/eval-${preset}"
"${evaluate[@]}" --text-true runs/vlvae-text_true_weighted-"${preset}"-s{0,1,2} --out "runs/eval-${preset}-weighted"
