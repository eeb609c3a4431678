#!/usr/bin/env bash
# mypy --strict over the product packages (taskward = node/, taskward.coordinator = coordinator/).
# mypy does not read setuptools' package-dir mapping, so it reads the code through a tree of symlinks
# spelled with the import names (.typecheck/, rebuilt each run); its messages name the repository's paths.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.typecheck
rm -rf "$tree"
mkdir -p "$tree/taskward"
for f in node/*; do
  ln -s "../../$f" "$tree/taskward/$(basename "$f")"
done
ln -s ../../coordinator "$tree/taskward/coordinator"
set +e
MYPYPATH="$tree" python -m mypy --config-file pyproject.toml --cache-dir "$tree/.mypy_cache" -p taskward 2>&1 |
  sed -e "s#^$tree/taskward/coordinator/#coordinator/#" -e "s#^$tree/taskward/#node/#"
status=${PIPESTATUS[0]}
exit "$status"
