#!/usr/bin/env bash
# Runs the test suite. The Nottingham MIDI folder (train/valid/test) comes from
# $DCCAFLAX_NOTTINGHAM; tests fall back to ../shared/data/nottingham/midi.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/env.sh
exec python3 -m pytest -q -p no:cacheprovider tests "$@"
