#!/usr/bin/env bash
# Delivers the rendered text (the previous step's result, {"text": ...}) to
# a file in its own working directory and reports how much it wrote.
set -euo pipefail
cat > "$TMPDIR/report.json"
printf '{"delivered_bytes": %d}\n' "$(wc -c < "$TMPDIR/report.json")"
