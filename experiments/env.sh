# Sourced by the scripts: use .venv when install.sh made one.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$(dirname "${BASH_SOURCE[0]}")/../.venv/bin/activate" ]; then
  source "$(dirname "${BASH_SOURCE[0]}")/../.venv/bin/activate"
fi
