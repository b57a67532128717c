#!/usr/bin/env bash
# Summarises the count: stdin holds {"report.count": {"greetings": N, "words": M}}.
set -euo pipefail
input=$(cat)
if [[ $input =~ \"greetings\":\ *([0-9]+) ]]; then
  greetings=${BASH_REMATCH[1]}
else
  echo "no greeting count in: $input" >&2
  exit 1
fi
printf '"%s greetings counted"\n' "$greetings"
