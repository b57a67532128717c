"""What the chart checks share: failure bookkeeping, rendering, lookups.

Every scenario renders on top of BASE_VALUES, since the chart has no
default credentials and refuses to render without them.
"""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "celeriac"

# What a user must give at the least: the broker and store URLs.
BASE_VALUES: dict = {
    "credentials": {
        "amqpAddr": "amqp://shop:s3cret@rabbitmq:5672/%2f",
        "redisUrl": "redis://:s3cret@redis-master:6379",
    },
}


class CheckFailed(Exception):
    pass


def need(cond: Any, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


checked: list[str] = []
failures: list[str] = []


def ok(what: str) -> None:
    checked.append(what)
    print(f"  ok   {what}", flush=True)


def section(title: str, fn: Callable[[], None]) -> None:
    print(f"-- {title}", flush=True)
    started = time.monotonic()
    try:
        fn()
    except CheckFailed as e:
        failures.append(f"{title}: {e}")
        print(f"  FAIL {e}", flush=True)
    except Exception as e:  # a crash of a check is a failure too
        failures.append(f"{title}: {type(e).__name__}: {e}")
        print(f"  FAIL {type(e).__name__}: {e}", flush=True)
    print(f"   ({time.monotonic() - started:.1f}s)", flush=True)


def run(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    need(p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{out}")
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def with_base(values: dict) -> dict:
    """`values` over BASE_VALUES, as a user's values file would be."""
    return deep_merge(BASE_VALUES, values)


def render(values: dict, name: str = "shop", namespace: str = "jobs", bare: bool = False) -> list[dict]:
    """Renders the chart with `values` over BASE_VALUES (or alone when
    `bare`), parsed into documents tagged with their template file."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values if bare else with_base(values), name=name, namespace=namespace,
                             is_install=True)
    docs = []
    for fname, text in sorted(files.items()):
        if fname.endswith("NOTES.txt"):
            need(text.strip(), "NOTES.txt renders empty")
            continue
        try:
            for doc in yaml.safe_load_all(text):
                if doc is not None:
                    doc["__file"] = fname
                    docs.append(doc)
        except yaml.YAMLError as e:
            raise CheckFailed(f"{fname} is not valid YAML: {e}\n{text}")
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, component: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind)
             if component is None
             or d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    need(len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}")
    return found[0]


def worker(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "worker")


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def credential_files(pod: dict, container: dict) -> dict[str, tuple[str, str]]:
    """For AMQP_ADDR and REDIS_URL: the (Secret, key) behind the file that
    the container's AMQP_ADDR_FILE / REDIS_URL_FILE name; fails on a URL
    given as a plain variable."""
    env = env_of(container)
    for var in ("AMQP_ADDR", "REDIS_URL"):
        need(var not in env, f"{var} given as a variable (visible in /proc/<pid>/environ), not as a file")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for var in ("AMQP_ADDR", "REDIS_URL"):
        path = env.get(f"{var}_FILE", {}).get("value")
        if path is None:
            continue
        for m in container.get("volumeMounts", []):
            prefix = m["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix):
                need(m.get("readOnly") is True, f"{var}_FILE mount {m} is writable")
                secret = volumes[m["name"]]["secret"]
                item = path[len(prefix):]
                keys = {i["path"]: i["key"] for i in secret.get("items", [])} or None
                out[var] = (secret["secretName"], keys[item] if keys else item)
                break
        else:
            raise CheckFailed(f"{var}_FILE={path} is not on a mounted Secret")
    return out

