#!/usr/bin/env bash
# Installs everything, then the main job on the model shipped in
# models/nottingham_paper (the paper's full-width towers, trained on the
# CPU; its card: models/nottingham_paper/README.md), end to end:
#   prepare the test pieces that hold the paper's first 16,000 test pairs
#   -> the paper's protocol on them, next to Table 2 (out/eval.md)
#   -> index them -> render a test piece afresh (its melody in the paper's
#   timbre) -> identify it and retrieve its score (Figure 3, out/figure3.png)
#   -> identify it rendered with a soundfont no training data used, and a
#   recording made outside the pipeline (fluidsynth's command line on the
#   whole MIDI file: melody and accompaniment): how far the paper's model
#   carries beyond its training timbre.
# About 8 minutes on 2 CPU cores, install included.  Training a model of
# one's own is one command (README, Training).
# The MIDI data is the Nottingham set bundled in datasets/nottingham; another
# folder (train/valid/test, or Nottingham.zip) can be given as the first
# argument or by $DCCAFLAX_NOTTINGHAM. Everything goes to ./out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/install.sh
source experiments/env.sh
MODEL=nottingham_paper
midi=(); [ -n "${1:-}" ] && midi=(--midi_dir "$1")
mkdir -p out
# 86 test pieces hold the first 16,000 test pairs (in piece-name order).
python3 -m data_prep.prepare --data_dir out/data --splits test --pieces 86 "${midi[@]}"
python3 -m experiments.eval --workdir "$MODEL" --data_dir out/data \
    --evals paper --splits test --nofull --out_dir out
python3 -m experiments.index --workdir "$MODEL" --data_dir out/data \
    --split test --out out/index.npz
# A test piece rendered afresh: its melody, FluidR3 (the paper's timbre).
piece_midi=$(python3 -c "
import sys; from data_prep import source
d = source.resolve(sys.argv[1] or None, 'out/midi')
import glob; print(sorted(glob.glob(d + '/test/*.mid'))[0])" "${1:-}")
piece=$(basename "$piece_midi" .mid)
python3 -m experiments.render --midi "$piece_midi" --soundfont fluidr3 \
    --out out/fresh.wav
echo "== which piece does out/fresh.wav play? (truth: $piece)"
python3 -m experiments.identify --workdir "$MODEL" --index out/index.npz \
    --audio out/fresh.wav --notimeline
echo "== its 3.2 s from 10 s on against all indexed snippets (Figure 3)"
python3 -m experiments.retrieve --workdir "$MODEL" --index out/index.npz \
    --audio out/fresh.wav --start 10 --duration 3.2 --piece "$piece" \
    --figure out/figure3.png
python3 -m experiments.render --midi "$piece_midi" --soundfont musescore \
    --out out/heldout.wav
echo "== which piece does out/heldout.wav (MuseScore General, a timbre no training data used) play? (truth: $piece)"
python3 -m experiments.identify --workdir "$MODEL" --index out/index.npz \
    --audio out/heldout.wav --notimeline
# Made outside the pipeline: FluidSynth's own command line plays the whole
# MIDI file (melody and chords; the model was trained on melodies alone).
fluidsynth -ni -q -g 0.6 -r 22050 -F out/outside.wav \
    /usr/share/sounds/sf2/FluidR3_GM.sf2 "$piece_midi" >/dev/null
echo "== which piece does out/outside.wav (melody + accompaniment) play? (truth: $piece)"
python3 -m experiments.identify --workdir "$MODEL" --index out/index.npz \
    --audio out/outside.wav --notimeline
echo "tables: out/eval.md (the paper's protocol); figure: out/figure3.png"
