#!/usr/bin/env bash
# Set everything up on a fresh machine and run a real sweep end to end on the local executor:
# submit -> worker processes write shards -> merge -> load the file and print what was computed.
source "$(dirname "$0")/_env.sh"
out="${1:-$ROOT/runs/demo}"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
echo "== pypet-hpc submit examples/first_steps.py --executor local --wait"
uv run pypet-hpc submit examples/first_steps.py --executor local --workdir "$out" \
  --runs-per-task 25 --wait -o "$out/results.h5"
echo
echo "== pypet-hpc show $out/results.h5"
uv run pypet-hpc show "$out/results.h5"
echo
echo "== what was computed (loaded back with natural naming)"
uv run python examples/analyse.py "$out/results.h5"
echo
echo "The trajectory file is $out/results.h5; the sweep directory (shards, logs, manifest) is $out."
