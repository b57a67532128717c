#!/usr/bin/env bash
# Fails on its first attempt and succeeds on the next. The first attempt
# leaves a mark beside its working directory, named after the process that
# runs the tasks (the same for every attempt of one run); the retry finds
# it, removes it and succeeds.
set -euo pipefail
mark="$(dirname "$TMPDIR")/flaky-example-$PPID"
if [[ -e $mark ]]; then
  rm -f "$mark"
  echo '"recovered on a retry"'
else
  touch "$mark"
  echo "the service is still warming up" >&2
  exit 1
fi
