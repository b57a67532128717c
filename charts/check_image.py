"""Checks of the chart against what it runs: the worker's source defines
every metric and env var the chart relies on, and the Dockerfile (hadolint)
builds and ships the binaries the chart starts.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

from chart_support import CHART, ROOT, need, ok, run
from check_monitoring import METRICS

VENV_BIN = Path(sys.executable).parent


def check_worker_source() -> None:
    """When the worker's metrics server exists, it must define every metric
    the alerts and dashboard use."""
    src = "\n".join(p.read_text() for p in (ROOT / "consumer" / "src").rglob("*.rs"))
    if "tasks_received_total" not in src:
        ok("worker source: no metrics server in consumer/src yet; metric names checked against the contract only")
        return
    missing = sorted(m for m in METRICS if m.removeprefix("celeriac_") not in src)
    need(not missing, f"metrics used by the alerts/dashboard but not defined in consumer/src: {missing}")
    for flag in ("CELERIAC_METRICS_ADDR", "CELERIAC_METRICS_TOKEN_FILE", "REDIS_URL_FILE", "AMQP_ADDR_FILE",
                 "CELERIAC_TLS_CA", "CELERIAC_TLS_CERT", "CELERIAC_TLS_KEY", "CELERIAC_REDIS_TLS_CA",
                 "CELERIAC_REDIS_TLS_CERT", "CELERIAC_REDIS_TLS_KEY", "CELERIAC_SIGNING_KEYS", "CELERIAC_QUEUES",
                 "CELERIAC_CONCURRENCY", "CELERIAC_GRACE", "CELERIAC_NAMESPACE"):
        need(flag in src, f"the chart sets {flag}, which the worker does not read")
    ok("worker source: defines every metric and env var the chart relies on")


def check_dockerfile() -> None:
    dockerfile = ROOT / "Dockerfile"
    run([str(VENV_BIN / "hadolint"), "--failure-threshold", "info", str(dockerfile)])
    ok("hadolint Dockerfile: no findings")
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    need(len(stages) >= 2, "Dockerfile is not multi-stage")
    m = re.search(r"cargo build --release --locked(?: --offline)? -p (\S+) --bin (\S+)", text)
    need(m, "no `cargo build --release -p <pkg> --bin <bin>` in the Dockerfile")
    pkg, binary = m.groups()
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    members = ws["workspace"]["members"]
    found = None
    for member in members:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        if manifest["package"]["name"] == pkg:
            bins = [b["name"] for b in manifest.get("bin", [])]
            bins += [p.stem for p in (ROOT / member / "src" / "bin").glob("*.rs")]
            need(binary in bins, f"package {pkg} has no binary {binary} (has {bins})")
            found = member
    need(found, f"no workspace member is package {pkg}")
    need(f"/out/{binary}" in text and re.search(rf'ENTRYPOINT \["/usr/local/bin/{binary}"\]', text),
         "ENTRYPOINT does not run the built binary")
    # The daemons run other binaries of the same image (beat: `celeriac`).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    daemon_bins = sorted({d["command"][0] for d in values["daemons"].values()})
    for b in daemon_bins:
        need(re.search(rf"--bin {re.escape(b)}(\s|$)", text) and re.search(rf"/out/{re.escape(b)}(\s|$)", text),
             f"the daemons run {b}, which the Dockerfile does not build and copy into the image")
    # Operators reach for these in a pod during an incident.
    for b in ("celeriac", "celeriac-dlq"):
        need(re.search(rf"--bin {re.escape(b)}(\s|$)", text) and re.search(rf"/out/{re.escape(b)}(\s|$)", text),
             f"the image does not carry {b}")
    user = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", text, re.M)
    need(user and user[-1][0] != "0", "final stage does not run as a numeric non-root USER")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    need(int(user[-1][0]) == values["podSecurityContext"]["runAsUser"], "image USER differs from the chart's runAsUser")
    need(re.search(rf"^EXPOSE {values['worker']['metricsPort']}\b", text, re.M), "EXPOSE differs from the metrics port")
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    clash = [m for m in members if m in ignored]
    need(not clash, f".dockerignore leaves out workspace members {clash}")
    ok(f"Dockerfile: {len(stages)} stages, builds {pkg}/{binary} (in {found}/), ENTRYPOINT runs it, "
       f"USER {user[-1][0]} = chart runAsUser, EXPOSE {values['worker']['metricsPort']}, "
       f".dockerignore keeps every workspace member; ships the daemons' {', '.join(daemon_bins)}, celeriac and celeriac-dlq")
