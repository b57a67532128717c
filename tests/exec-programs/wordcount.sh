#!/usr/bin/env bash
# A celeriac exec task in Bash: counts the words of a JSON string.
#
# stdin:  "the quick brown fox"
# stdout: {"words": 4, "longest": "quick", "language": "bash"}
#
# Run directly (its path on the worker's --exec-allow; the #! line picks
# bash). Input that is not a JSON string exits with status 3.
set -euo pipefail

read -r line || true
if [[ ! $line =~ ^\"(.*)\"$ ]]; then
    echo "expected a JSON string on stdin, got: $line" >&2
    exit 3
fi
read -r -a words <<< "${BASH_REMATCH[1]}"
longest=""
for word in "${words[@]}"; do
    if (( ${#word} > ${#longest} )); then
        longest=$word
    fi
done
printf '{"words": %d, "longest": "%s", "language": "bash"}\n' "${#words[@]}" "$longest"
