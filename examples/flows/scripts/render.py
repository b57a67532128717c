"""Renders the report and the checks as text; stdin maps each task it needs to its result."""
import json
import sys

inputs = json.load(sys.stdin)
lines = [inputs["report"], f"python {inputs['checks.python']}, bash {inputs['checks.bash']}"]
json.dump({"text": "\n".join(lines)}, sys.stdout)
