"""A celeriac exec task in Python: statistics of a list of numbers.

stdin:  {"numbers": [1, 2, 3]}
stdout: {"count": 3, "sum": 6, "mean": 2.0, "language": "python"}

Run by a worker as `python3 stats.py` (with python3 on its --exec-allow).
Bad input exits with status 2 and says why on stderr: the task fails with
that message.
"""

import json
import sys


def main() -> int:
    try:
        numbers = json.load(sys.stdin)["numbers"]
    except (ValueError, KeyError, TypeError) as e:
        print(f"expected {{\"numbers\": [...]}} on stdin: {e!r}", file=sys.stderr)
        return 2
    if not numbers:
        print("no numbers", file=sys.stderr)
        return 2
    total = sum(numbers)
    json.dump(
        {"count": len(numbers), "sum": total, "mean": total / len(numbers), "language": "python"},
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
