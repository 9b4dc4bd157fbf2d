#!/usr/bin/env bash
# Installs everything, then runs the main job on a small default, end to end:
#   prepare 16 Nottingham pieces per split (both TFDS configs) -> draw one ->
#   train the QUICK, NARROW config (width 0.25, CPU-sized) -> evaluate with
#   the paper's protocol -> training curve. About 10 minutes on 2 CPU cores.
# The Nottingham MIDI folder (train/valid/test, or Nottingham.zip) comes from
# $DCCAFLAX_NOTTINGHAM or the first argument. Everything goes to ./out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/install.sh
source experiments/env.sh
export DCCAFLAX_NOTTINGHAM="${1:-${DCCAFLAX_NOTTINGHAM:-}}"
if [ -z "$DCCAFLAX_NOTTINGHAM" ]; then
  python3 -m data_prep.prepare --data_dir out/quick_data   # says where to get it
fi
python3 -m data_prep.prepare --data_dir out/quick_data --limit 16
python3 -m data_prep.show --data_dir out/quick_data --split test --out out/piece.png
python3 -m experiments.train --flagfile=experiments/quick.flags --workdir out/quick_run
python3 -m experiments.evaluate --workdir out/quick_run
echo "figures: out/piece.png (data), out/quick_run/training_curve.png; table: out/quick_run/eval.md"
