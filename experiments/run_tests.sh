#!/usr/bin/env bash
# Runs the test suite on the Nottingham MIDI set bundled in datasets/nottingham
# ($DCCAFLAX_NOTTINGHAM, when set, names another folder holding train/valid/test).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/env.sh
exec python3 -m pytest -q -p no:cacheprovider --durations=20 tests "$@"
