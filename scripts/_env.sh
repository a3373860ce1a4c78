# Sourced by the scripts: make sure uv exists (from PyPI) and the project's environment is in sync.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export UV_PYTHON_DOWNLOADS=never   # use the machine's python3 (3.11 or newer), never download one
if ! command -v uv >/dev/null 2>&1; then
  echo "uv not found: installing it from PyPI (python3 -m pip install --user uv)" >&2
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --locked --quiet --python "$(command -v python3)"
