#!/usr/bin/env bash
# Installs everything dccaflax needs on Debian/Ubuntu; safe to run again.
# System packages (apt-get, only when missing): fluidsynth, the FluidR3 GM
# soundfont, the Csound GM bank (a training timbre), MuseScore General (held
# out for evaluation), libcairo2 (SVG rasterizing), chromium and
# chromium-driver (the browser tests of experiments.serve). Python packages:
# this repo with its test and demo extras (pip). Where the system Python
# refuses pip (PEP 668), a virtual environment .venv is made and used;
# experiments/env.sh picks it up.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fluidsynth >/dev/null || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -f /usr/share/sounds/sf2/sf_GMbank.sf2 ] || need+=(csound-soundfont)
[ -f /usr/share/sounds/sf3/MuseScore_General.sf3 ] || need+=(musescore-general-soundfont-small)
ldconfig -p 2>/dev/null | grep -q libcairo.so.2 || need+=(libcairo2)
# the browser tests of experiments.serve: Debian's Chromium and its driver
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

source experiments/env.sh
if [ -z "${VIRTUAL_ENV:-}" ] && python3 -c 'import sys,sysconfig,os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")))'; then
  echo "install.sh: system Python is externally managed; using .venv"
  command -v python3 >/dev/null && python3 -m venv .venv 2>/dev/null || {
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq python3-venv >/dev/null; python3 -m venv .venv; }
  source experiments/env.sh
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,demo]'
echo "install.sh: ok ($(python3 -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__)'))"
