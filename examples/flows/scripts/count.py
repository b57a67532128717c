"""Counts the greetings and their words.

stdin maps what it needs to its result: `shout` echoed what it received,
{"greet": {"greetings": [...]}}, so this gets {"shout": {"greet": {...}}}.
"""
import json
import sys

inputs = json.load(sys.stdin)
greetings = inputs["shout"]["greet"]["greetings"]
json.dump({"greetings": len(greetings), "words": sum(len(g.split()) for g in greetings)}, sys.stdout)
