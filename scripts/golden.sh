#!/usr/bin/env bash
# Re-renders every golden template case with Go's own text/template (the engine
# Tinkerbell uses) and fails if the committed expectations differ, i.e. if the
# outputs the Rust tests compare against were not produced by Go.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=crates/model/tests/golden
command -v go >/dev/null || { echo "golden.sh: needs Go (apt-get install golang-go)" >&2; exit 1; }
(cd "$dir" && GOFLAGS=-mod=mod GO111MODULE=off go run go/main.go .)
if ! git diff --exit-code --stat -- "$dir"; then
  echo "golden.sh: Go renders the golden cases differently from the committed files (above)" >&2
  exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- "$dir")
if [ -n "$untracked" ]; then
  echo "golden.sh: new golden outputs not committed: $untracked" >&2
  exit 1
fi
echo "golden.sh: Go agrees with every committed golden output"
