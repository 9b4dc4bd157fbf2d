#!/usr/bin/env bash
# Installs everything, then runs the main job on a small default:
#   prepare a few dozen Nottingham pieces (both TFDS configs) and draw one.
# The Nottingham MIDI folder (train/valid/test, or Nottingham.zip) comes from
# $DCCAFLAX_NOTTINGHAM or the first argument. Output goes to $OUT (./out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/install.sh
source experiments/env.sh
export DCCAFLAX_NOTTINGHAM="${1:-${DCCAFLAX_NOTTINGHAM:-}}"
OUT="${OUT:-out}"
LIMIT="${LIMIT:-10}"
if [ -z "$DCCAFLAX_NOTTINGHAM" ]; then
  python3 -m data_prep.prepare --data_dir "$OUT/data"   # says where to get it
fi
python3 -m data_prep.prepare --data_dir "$OUT/data" --limit "$LIMIT"
python3 -m data_prep.show --data_dir "$OUT/data" --split test --out "$OUT/piece.png"
