#!/usr/bin/env bash
# The whole test suite: ruff, mypy and pytest (SLURM tests need `sudo bash slurm/start.sh` first;
# with CI=true they fail instead of skipping when the cluster is not up).
source "$(dirname "$0")/_env.sh"
echo "== ruff"
uv run ruff check src tests scripts examples
echo "== mypy"
uv run mypy
echo "== pytest"
uv run pytest "$@"
