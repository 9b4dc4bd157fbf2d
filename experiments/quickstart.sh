#!/usr/bin/env bash
# Installs everything, then runs the main job on a small default, end to end:
#   prepare 16 Nottingham pieces per split (both TFDS configs) -> draw one ->
#   train the QUICK, NARROW config (width 0.25, CPU-sized) -> evaluate with
#   the paper's protocol -> training curve. About 5 minutes on 2 CPU cores.
# The MIDI data is the Nottingham set bundled in datasets/nottingham; another
# folder (train/valid/test, or Nottingham.zip) can be given as the first
# argument or by $DCCAFLAX_NOTTINGHAM. Everything goes to ./out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/install.sh
source experiments/env.sh
midi=(); [ -n "${1:-}" ] && midi=(--midi_dir "$1")
python3 -m data_prep.prepare --data_dir out/quick_data --limit 16 "${midi[@]}"
python3 -m data_prep.show --data_dir out/quick_data --split test --out out/piece.png
python3 -m experiments.train --flagfile=experiments/quick.flags --workdir out/quick_run
python3 -m experiments.evaluate --workdir out/quick_run
echo "figures: out/piece.png (data), out/quick_run/training_curve.png; table: out/quick_run/eval.md"
