#!/usr/bin/env bash
# Runs the test suite on the Nottingham MIDI set bundled in datasets/nottingham
# ($DCCAFLAX_NOTTINGHAM, when set, names another folder holding train/valid/test).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/env.sh
# Two workers (pytest-xdist; $DCCAFLAX_TEST_WORKERS to change, 0 for none),
# each test file on one worker: many tests spend their time compiling on
# one core.  The longest files first, in the order tests/conftest.py sets.
exec python3 -m pytest -q -p no:cacheprovider --durations=20 \
  -n "${DCCAFLAX_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder \
  tests "$@"
