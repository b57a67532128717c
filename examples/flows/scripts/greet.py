"""Greets someone in a few languages: {"name", "languages"} on stdin."""
import json
import sys

HELLO = {"en": "hello", "fr": "bonjour", "de": "hallo", "es": "hola"}

task = json.load(sys.stdin)
name = task.get("name", "world")
greetings = [f"{HELLO[lang]}, {name}" for lang in task.get("languages", ["en"]) if lang in HELLO]
json.dump({"greetings": greetings}, sys.stdout)
