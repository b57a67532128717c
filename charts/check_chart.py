"""Checks of charts/celeriac, its alert rules and dashboard, and the Dockerfile.

Run through charts/check, which provides the venv and promtool. Every check
prints one line; the first failure of a section is reported with its cause
and the script exits 1 after all sections ran.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

import check_security
from chart_support import (CHART, ROOT, CheckFailed, by_kind, checked, credential_files, deep_merge, env_of, failures, need, ok, one,
                           render, run, section, with_base, worker)
from check_security import mounted_secrets

ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = CHART / "tests" / "alerts_test.yaml"
OVERRIDE_TESTS = CHART / "tests" / "alerts_overrides_test.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
VENV_BIN = Path(sys.executable).parent

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest schema kubernetes-validate ships.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]

# Kinds validated against the Kubernetes schemas; anything else must be one
# of the custom kinds below, which get structural checks of their own.
CORE_KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "Secret",
    "NetworkPolicy",
    "ConfigMap",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
}
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}

# The worker's metrics (see the metrics server); alerts and the dashboard
# may use only these, plus Prometheus's own `up`.
METRICS = {
    "celeriac_tasks_received_total",
    "celeriac_tasks_succeeded_total",
    "celeriac_tasks_failed_total",
    "celeriac_tasks_retried_total",
    "celeriac_tasks_dead_lettered_total",
    "celeriac_tasks_expired_total",
    "celeriac_tasks_duplicates_suppressed_total",
    "celeriac_tasks_revoked_total",
    "celeriac_tasks_deadline_missed_total",
    "celeriac_tasks_wait_exceeded_total",
    "celeriac_broker_reconnects_total",
    "celeriac_workflow_releases_total",
    "celeriac_task_run_seconds",
    "celeriac_task_queue_wait_seconds",
    "celeriac_tasks_in_flight",
    "celeriac_worker_ready",
    "celeriac_store_up",
    "celeriac_queue_messages",
    "celeriac_queue_consumers",
    "celeriac_tasks_started_total",
    "celeriac_task_errors_total",
    "celeriac_task_oldest_running_seconds",
    "celeriac_tasks_throttled_total",
    "celeriac_pool_in_use",
    "celeriac_beat_ticks_total",
    "celeriac_beat_last_tick_timestamp_seconds",
    "celeriac_beat_entries",
    "celeriac_beat_up",
    "celeriac_broker_queue_messages",
    "celeriac_broker_queue_consumers",
}
SEVERITIES = {"critical", "warning", "info"}


# --------------------------------------------------------------- scenarios

# Flows for beat, as a user puts them in daemons.beat.flows (one without a
# trailing newline, to show the text reaches the pod byte for byte).
BEAT_FLOWS = {
    "nightly.yaml": 'name: nightly-report\nschedule: "30 2 * * *"\noverlap: skip\ntasks:\n'
                    "  extract: {task: reports.extract}\n  report: {task: reports.build, needs: [extract]}\n",
    "cache.yml": "name: cache\ntasks:\n  refresh: {task: cache.refresh, schedule: 600}",
}
FLOWS_DIR = "/etc/celeriac/flows"

SCENARIOS: dict[str, dict] = {
    "defaults": {},
    **check_security.SCENARIOS,
    "keda": {
        "worker": {"queues": ["default", "emails"]},
        "celeriacNamespace": "shop",
        "autoscaling": {
            "keda": {"enabled": True, "idleReplicaCount": 0, "fallbackReplicas": 2,
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}}},
            "hpa": {"enabled": True},
        },
        "prometheusRule": {"enabled": True},
    },
    "keda-http": {
        "autoscaling": {"keda": {"enabled": True, "protocol": "http",
                                 "managementUrl": "http://guest:guest@rabbitmq:15672/%2f"}},
    },
    "hpa": {
        "autoscaling": {"keda": {"enabled": False},
                        "hpa": {"enabled": True, "targetMemoryUtilizationPercentage": 75}},
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "monitoring-custom": {
        "serviceMonitor": {"enabled": True, "jobName": "shop-workers"},
        "prometheusRule": {
            "enabled": True,
            "additionalAlertLabels": {"team": "shop"},
            "disabledAlerts": ["CeleriacDeadLetterQueueNotEmpty"],
            "runbookBaseUrl": "https://runbooks.example/celeriac",
            "thresholds": {"stuckSeconds": 7200, "unconsumedFor": "20m", "retryRatio": 0.8},
        },
    },
    "monitoring-overrides": {
        "prometheusRule": {
            "enabled": True,
            "thresholds": {"beatMissedTicks": 3, "runTimeP95Seconds": 120},
            "thresholdOverrides": {
                "stuckSeconds": [{"queue": "reports", "value": 7200}, {"queue": "emails", "value": 600}],
                "runTimeP95Seconds": [{"task": "render", "value": 600},
                                      {"queue": "media", "task": "transcode", "value": 1800}],
            },
        },
    },
    "existing-secret": {
        "credentials": {"existingSecret": "celeriac-urls", "amqpAddr": "", "redisUrl": ""},
        "autoscaling": {"keda": {"enabled": True}},
        "worker": {"podAnnotations": {"team": "shop"}},
    },
    "full": {
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "regcred"}],
        "store": {"enabled": True},
        "worker": {
            "replicaCount": 3, "queues": ["default", "reports"], "concurrency": 4,
            "prefetch": 8, "threads": 2, "graceSeconds": 120, "deliveryLimit": 5,
            "consumerTimeout": "1h", "leaseTtl": "90s", "maxMessageBytes": 1048576,
            "extraArgs": ["--log-format", "json"],
            "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
            "extraEnvFrom": [{"configMapRef": {"name": "task-config"}}],
            "extraVolumes": [{"name": "data", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "data", "mountPath": "/data"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "ScheduleAnyway"}],
            "priorityClassName": "batch",
            "tolerations": [{"key": "jobs", "operator": "Exists"}],
            "nodeSelector": {"pool": "workers"},
        },
        "daemons": {"beat": {"enabled": True, "metricsPort": 9465, "replicaCount": 2,
                             "podAnnotations": {"team": "shop"}, "flows": BEAT_FLOWS}},
        "podDisruptionBudget": {"minAvailable": 1},
        "serviceAccount": {"create": False, "name": "celeriac"},
        "dashboard": {"annotations": {"grafana_folder": "Queues"}},
    },
    "no-store": {
        "store": {"enabled": False},
        "credentials": {"redisUrl": ""},
        "service": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "dashboard": {"enabled": False},
    },
    "beat-flows": {
        "daemons": {"beat": {"enabled": True, "flows": BEAT_FLOWS}},
    },
    "beat-existing-flows": {
        "credentials": {"existingSecret": "celeriac-urls", "amqpAddr": "", "redisUrl": ""},
        "daemons": {"beat": {"enabled": True, "existingFlowsConfigMap": "shop-flows",
                             "args": ["beat", "/etc/celeriac/flows", "/opt/flows/extra.yaml"]}},
    },
}

# Values that must be refused, with a piece of the expected message.
BAD_VALUES: dict[str, tuple[dict, str]] = {
    "no queue": ({"worker": {"queues": []}}, "queues"),
    "zero concurrency": ({"worker": {"concurrency": 0}}, "concurrency"),
    "unknown key": ({"worker": {"concurrancy": 4}}, "concurrancy"),
    "no broker URL": ({"credentials": {"amqpAddr": ""}}, "amqpAddr"),
    **check_security.BAD_VALUES,
    "bad log format": ({"worker": {"logFormat": "xml"}}, "logFormat"),
    "servicemonitor without service": (
        {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}, "service.enabled"),
    "http trigger without URL": (
        {"autoscaling": {"keda": {"enabled": True, "protocol": "http"}}}, "managementUrl"),
    "beat without flows": ({"daemons": {"beat": {"enabled": True}}}, "no flows to schedule"),
    "beat without the store": (
        {"store": {"enabled": False}, "daemons": {"beat": {"enabled": True, "flows": BEAT_FLOWS}}},
        "store.enabled"),
    "beat flows and an existing ConfigMap": (
        {"daemons": {"beat": {"enabled": True, "flows": BEAT_FLOWS, "existingFlowsConfigMap": "x"}}},
        "not both"),
    "beat flow file not named .yaml": (
        {"daemons": {"beat": {"enabled": True, "flows": {"nightly.txt": "name: x"}}}}, "nightly.txt"),
    "threshold override of an unknown threshold": (
        {"prometheusRule": {"enabled": True, "thresholdOverrides": {"unconsumedFor": [{"queue": "q", "value": 1}]}}},
        "no alert has this threshold in its expression"),
    "threshold override by a label the alert lacks": (
        {"prometheusRule": {"enabled": True, "thresholdOverrides": {"stuckSeconds": [{"task": "t", "value": 1}]}}},
        "no task label"),
    "threshold overrides that overlap": (
        {"prometheusRule": {"enabled": True,
                            "thresholdOverrides": {"runTimeP95Seconds": [{"task": "t", "value": 1},
                                                                         {"queue": "q", "task": "t", "value": 2}]}}},
        "overridden twice"),
    "threshold override twice for one queue": (
        {"prometheusRule": {"enabled": True,
                            "thresholdOverrides": {"stuckSeconds": [{"queue": "q", "value": 1}, {"queue": "q", "value": 2}]}}},
        "overridden twice"),
    "dashboard login of an unknown type": (
        {"daemons": {"dashboard": {"enabled": True, "loginSecret": "x", "loginType": "oauth"}}}, "loginType"),
    "beat flow that is not a mapping": (
        {"daemons": {"beat": {"enabled": True, "flows": {"bad.yaml": "- name: x"}}}}, "bad.yaml"),
}


# ------------------------------------------------------------------ checks


def check_values_documented() -> None:
    """Every key of values.yaml has a comment line above it, except keys
    inside a value documented as a whole ("# -- ...")."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented as a whole)
    undocumented = []
    comment: list[str] = []  # the comment lines right above
    keys = 0
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            comment = []
            continue
        if s.startswith("#"):
            comment.append(s)
            continue
        indent = len(line) - len(line.lstrip())
        above, comment = comment, []
        while stack and stack[-1][0] >= indent:
            stack.pop()
        m = re.match(r"^([A-Za-z0-9_.\-/]+):(\s|$)", s)
        if not m or any(whole for _, whole in stack):
            continue  # a list item, or data inside a value documented whole
        keys += 1
        if not above:
            undocumented.append(f"line {n}: {m.group(1)}")
        stack.append((indent, any(c.startswith("# --") for c in above)))
    need(not undocumented, "values without a comment above them:\n    " + "\n    ".join(undocumented))
    ok(f"values.yaml: all {keys} keys documented")
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = sorted(set(values) - set(schema["properties"]))
    need(not missing, f"values.schema.json lacks top-level keys {missing}")
    ok("values.schema.json covers every top-level key")


def check_lint() -> None:
    infos: set[str] = set()
    for name, values in SCENARIOS.items():
        for kube in KUBE_VERSIONS:
            res = helm.lint(str(CHART), with_base(values), strict=True, namespace="jobs", kube_version=f"v{kube}")
            errors = list(res.get("errors") or [])
            errors += [m for m in res.get("messages") or [] if m.get("severity", 0) >= 2]
            need(not errors, f"helm lint --strict ({name}, k8s {kube}): {errors}")
        infos |= {m["error"] for m in res.get("messages") or []}
    ok(f"helm lint --strict, {len(SCENARIOS)} values sets ({', '.join(SCENARIOS)}), "
       f"k8s {' and '.join(KUBE_VERSIONS)}" + (f"; info only: {'; '.join(sorted(infos))}" if infos else ""))


def check_packaged_files() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        files = {f["name"] for f in chart.files}
    need({"files/alerts.yaml", "files/dashboard.json"} <= files, f"chart files {sorted(files)}")
    need(not any(f.startswith("tests/") for f in files), "tests/ is packaged; add it to .helmignore")
    ok("packaged chart carries files/alerts.yaml and files/dashboard.json, not tests/")


def check_bad_values() -> None:
    for what, (values, expect) in BAD_VALUES.items():
        try:
            render(values)
        except CheckFailed:
            raise
        except Exception as e:  # HelmError and friends
            need(expect in str(e), f"values '{what}' refused, but the message lacks {expect!r}: {e}")
            ok(f"refuses {what}")
            continue
        raise CheckFailed(f"values '{what}' ({values}) rendered without error")


def validate_custom(doc: dict) -> None:
    kind = doc["kind"]
    spec = doc.get("spec")
    need(isinstance(spec, dict), f"{kind} has no spec")
    name = doc["metadata"]["name"]
    need(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63,
         f"{kind} name {name!r} is not a DNS label")
    if kind == "ServiceMonitor":
        need(spec["selector"]["matchLabels"], "ServiceMonitor selects nothing")
        for ep in spec["endpoints"]:
            need(ep.get("port") == "metrics" and ep.get("path") == "/metrics",
                 f"ServiceMonitor endpoint {ep}")
            need(re.fullmatch(r"\d+[smh]", ep["interval"]), f"bad interval {ep['interval']}")
    elif kind == "PrometheusRule":
        need(spec["groups"], "PrometheusRule has no groups")
        for g in spec["groups"]:
            need(g["name"] and g["rules"], f"empty group {g}")
            for r in g["rules"]:
                need(set(r) <= {"alert", "record", "expr", "for", "labels", "annotations",
                                "keep_firing_for"}, f"unknown rule fields {sorted(r)}")
    elif kind == "ScaledObject":
        tgt = spec["scaleTargetRef"]
        need(tgt["kind"] == "Deployment" and tgt["name"], f"scaleTargetRef {tgt}")
        need(spec["minReplicaCount"] <= spec["maxReplicaCount"], "minReplicaCount > maxReplicaCount")
        need(spec["triggers"], "ScaledObject without triggers")
        for t in spec["triggers"]:
            need(t["type"] == "rabbitmq", f"trigger type {t['type']}")
            md = t["metadata"]
            need(md["mode"] == "QueueLength" and md["protocol"] in ("amqp", "http"), f"trigger {md}")
            need(all(isinstance(v, str) for v in md.values()), f"trigger metadata must be strings: {md}")
            need(int(md["value"]) > 0, "trigger value")
            need(t["authenticationRef"]["name"], "trigger without authenticationRef")
    elif kind == "TriggerAuthentication":
        refs = spec["secretTargetRef"]
        need(refs and all({"parameter", "name", "key"} <= set(r) for r in refs), f"secretTargetRef {refs}")
        need(any(r["parameter"] == "host" for r in refs), "TriggerAuthentication lacks host")


def check_render_and_validate() -> None:
    counts: dict[str, int] = {}
    for name, values in SCENARIOS.items():
        docs = render(values)
        names = set()
        for doc in docs:
            fname = doc.pop("__file")
            kind = doc.get("kind")
            need(kind and doc.get("apiVersion") and doc.get("metadata", {}).get("name"),
                 f"{fname}: a document without kind/apiVersion/name")
            key = (kind, doc["metadata"]["name"])
            need(key not in names, f"{name}: two {kind} named {key[1]}")
            names.add(key)
            need(doc["metadata"].get("namespace") == "jobs", f"{fname}: {kind} without the release namespace")
            if kind in CORE_KINDS:
                for kube in KUBE_VERSIONS:
                    try:
                        kubernetes_validate.validate(doc, kube, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        raise CheckFailed(f"{name}: {fname}: {kind} invalid for k8s {kube}: "
                                          f"{e.message} at {list(e.path)}")
            else:
                need((doc["apiVersion"], kind) in CUSTOM_KINDS, f"{fname}: unexpected kind {doc['apiVersion']} {kind}")
                validate_custom(doc)
            counts[kind] = counts.get(kind, 0) + 1
            doc["__file"] = fname
        SCENARIO_DOCS[name] = docs
        kinds = sorted({d["kind"] for d in docs})
        ok(f"render '{name}': {len(docs)} objects ({', '.join(kinds)}); core kinds valid for k8s "
           + " and ".join(KUBE_VERSIONS))
    ok("objects checked: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))


SCENARIO_DOCS: dict[str, list[dict]] = {}


def docs_for(name: str) -> list[dict]:
    if name not in SCENARIO_DOCS:
        SCENARIO_DOCS[name] = render(SCENARIOS[name])
    return SCENARIO_DOCS[name]


def check_worker_deployment() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = docs_for("defaults")
    dep = worker(docs)
    pod = dep["spec"]["template"]["spec"]
    need(dep["spec"]["replicas"] == values["worker"]["replicaCount"], "fixed replicas without autoscaling")
    (c,) = pod["containers"]
    # Security.
    psc, csc = pod["securityContext"], c["securityContext"]
    need(psc["runAsNonRoot"] and psc["runAsUser"] != 0 and psc["seccompProfile"]["type"] == "RuntimeDefault",
         f"pod securityContext {psc}")
    need(csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
         and csc["capabilities"]["drop"] == ["ALL"] and csc["runAsNonRoot"] is True
         and csc["seccompProfile"]["type"] == "RuntimeDefault", f"container securityContext {csc}")
    need(pod["automountServiceAccountToken"] is False, "service account token mounted")
    need(any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "no writable /tmp")
    ok("worker: non-root, read-only root, no privilege escalation, ALL capabilities dropped, seccomp RuntimeDefault")
    # Probes on the metrics server.
    port = c["ports"][0]
    need(port["name"] == "metrics" and port["containerPort"] == 9464, f"metrics port {port}")
    need(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe path")
    need(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe path")
    need(c["startupProbe"]["httpGet"]["path"] == "/healthz", "startup probe path")
    ok("worker: startup and liveness on /healthz, readiness on /readyz, port metrics=9464")
    # Grace.
    env = env_of(c)
    grace = int(env["CELERIAC_GRACE"]["value"].rstrip("s"))
    need(grace == values["worker"]["graceSeconds"], "CELERIAC_GRACE")
    need(pod["terminationGracePeriodSeconds"] > grace, "terminationGracePeriodSeconds not above the worker's grace")
    ok(f"worker: CELERIAC_GRACE={grace}s < terminationGracePeriodSeconds={pod['terminationGracePeriodSeconds']}")
    # Credentials only from the Secret.
    secret = one(docs, "Secret")
    files = credential_files(pod, c)
    for var in ("AMQP_ADDR", "REDIS_URL"):
        need(files.get(var) == (secret["metadata"]["name"], var) and var in secret["data"], f"{var} file {files}")
    need(env["CELERIAC_QUEUES"]["value"] == "default" and env["CELERIAC_NAMESPACE"]["value"] == "celeriac"
         and env["CELERIAC_CONCURRENCY"]["value"] == "16", "queues/namespace/concurrency env")
    need(env["CELERIAC_METRICS_ADDR"]["value"] == "0.0.0.0:9464", "CELERIAC_METRICS_ADDR")
    need(c["image"] == f"celeriac-worker:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}",
         f"image {c['image']}")
    need("checksum/secret" in dep["spec"]["template"]["metadata"]["annotations"], "no secret checksum")
    ok("worker: AMQP_ADDR and REDIS_URL as files from the chart's Secret (never variables); queues, namespace, concurrency, metrics address set")
    need(c["resources"]["requests"] and c["resources"]["limits"], "resources")
    pdb = one(docs, "PodDisruptionBudget", "worker")
    need(pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "PDB selector")
    svc = one(docs, "Service")
    need(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], "Service selector")
    need(all(v == dep["spec"]["template"]["metadata"]["labels"][k] for k, v in svc["spec"]["selector"].items()),
         "Service selector does not match the pods")
    ok("defaults: Service and PodDisruptionBudget select the worker pods; no KEDA, HPA, beat or monitoring CRDs")
    need(not by_kind(docs, "ScaledObject") and not by_kind(docs, "HorizontalPodAutoscaler")
         and not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "PrometheusRule"), "defaults render CRDs")
    need(len(by_kind(docs, "Deployment")) == 1, "beat enabled by default")
    need(len(by_kind(docs, "ConfigMap")) == 1, "a ConfigMap besides the dashboard by default")

    full = docs_for("full")
    dep = worker(full)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    need(c["image"].endswith("@sha256:" + "a" * 64), "digest")
    need(pod["terminationGracePeriodSeconds"] == 135 and env["CELERIAC_GRACE"]["value"] == "120s", "grace 120")
    for var, val in {"CELERIAC_PREFETCH": "8", "CELERIAC_THREADS": "2", "CELERIAC_DELIVERY_LIMIT": "5",
                     "CELERIAC_CONSUMER_TIMEOUT": "1h", "CELERIAC_LEASE_TTL": "90s",
                     "CELERIAC_MAX_MESSAGE_BYTES": "1048576", "RUST_BACKTRACE": "1",
                     "CELERIAC_QUEUES": "default,reports", "CELERIAC_CONCURRENCY": "4"}.items():
        need(env.get(var, {}).get("value") == val, f"{var} != {val}: {env.get(var)}")
    tsc = pod["topologySpreadConstraints"][0]
    need(tsc["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "spread selector")
    need(pod["serviceAccountName"] == "celeriac" and not by_kind(full, "ServiceAccount"), "serviceAccount.create=false")
    need(one(full, "PodDisruptionBudget", "worker")["spec"] == {"minAvailable": 1, "selector": dep["spec"]["selector"]},
         "PDB minAvailable")
    ok("full: every worker option reaches its env var; digest, spread constraints, PDB minAvailable")
    nb = docs_for("no-store")
    (nc,) = worker(nb)["spec"]["template"]["spec"]["containers"]
    nfiles = credential_files(worker(nb)["spec"]["template"]["spec"], nc)
    need("REDIS_URL" not in nfiles and "REDIS_URL" not in one(nb, "Secret")["data"], "store.enabled=false")
    ok("no-store: store.enabled=false drops REDIS_URL from the worker and the Secret")


def check_exporter() -> None:
    docs = render({"daemons": {"exporter": {"enabled": True}}, "serviceMonitor": {"enabled": True}},
                  "exporter")
    dep = one(docs, "Deployment", "exporter")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    need(c["command"] == ["celeriac"] and c["args"] == ["exporter"], f"exporter command {c['command']} {c['args']}")
    need(env_of(c)["CELERIAC_METRICS_ADDR"]["value"] == "0.0.0.0:9466", "exporter address")
    need(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "exporter readiness probe")
    need(set(credential_files(dep["spec"]["template"]["spec"], c)) >= {"AMQP_ADDR"}, "exporter broker URL from the Secret")
    pm = one(docs, "PodMonitor", "exporter")
    need(pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["replacement"] == "celeriac", "exporter job label")
    need(not [d for d in by_kind(docs, "Deployment") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "beat"],
         "beat deployed although disabled")
    ok("exporter: `celeriac exporter` on 9466 with probes, the broker URL from the Secret, a PodMonitor "
       "under the alerts' job name")


def check_web_dashboard() -> None:
    docs = render({"daemons": {"dashboard": {"enabled": True, "loginSecret": "ui-login"}},
                   "networkPolicy": {"enabled": True,
                                     "dashboardFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]}},
                  "web-dashboard")
    dep = one(docs, "Deployment", "dashboard")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    need(c["args"] == ["dashboard"], f"dashboard args {c['args']}")
    env = env_of(c)
    need(env["CELERIAC_DASHBOARD_LISTEN"]["value"] == "0.0.0.0:8080", "dashboard listen address")
    need(env["CELERIAC_DASHBOARD_TOKEN_FILE"]["value"] == "/etc/celeriac/login/token", "dashboard token file")
    need(mounted_secrets(pod, c).get("/etc/celeriac/login") == "ui-login", "dashboard login Secret mount")
    need(c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}], f"dashboard ports {c['ports']}")
    need(c["readinessProbe"]["tcpSocket"]["port"] == "http", "dashboard probe")
    svc = one(docs, "Service", "dashboard")
    need(svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
         and svc["spec"]["type"] == "ClusterIP", f"dashboard Service {svc['spec']}")
    policy = one(docs, "NetworkPolicy")
    rules = policy["spec"]["ingress"]
    need(len(rules) == 2 and rules[1]["ports"] == [{"port": "http", "protocol": "TCP"}],
         f"dashboard ingress rule {rules}")
    # Basic auth: the user name and password keys of the Secret become the
    # files of the directory --basic-auth-file reads.
    basic = render({"daemons": {"dashboard": {"enabled": True, "loginSecret": "ui-basic", "loginType": "basic",
                                              "loginUsernameKey": "user"}}}, "web-dashboard-basic")
    bdep = one(basic, "Deployment", "dashboard")
    bpod = bdep["spec"]["template"]["spec"]
    (bc,) = bpod["containers"]
    benv = env_of(bc)
    need(benv["CELERIAC_DASHBOARD_BASIC_AUTH_FILE"]["value"] == "/etc/celeriac/login", "dashboard basic auth directory")
    need("CELERIAC_DASHBOARD_TOKEN_FILE" not in benv, "basic auth also gets a token file")
    need(mounted_secrets(bpod, bc).get("/etc/celeriac/login") == "ui-basic", "dashboard basic auth Secret mount")
    (vol,) = [v for v in bpod["volumes"] if v["name"] == "login"]
    need(vol["secret"]["items"] == [{"key": "user", "path": "username"}, {"key": "password", "path": "password"}],
         f"basic auth Secret items {vol['secret']}")
    src = (ROOT / "dashboard" / "src" / "auth.rs").read_text()
    need('part("username")' in src and 'part("password")' in src,
         "the dashboard no longer reads username and password files from a --basic-auth-file directory")
    # Without a login Secret: read-only, nothing mounted.
    plain = one(render({"daemons": {"dashboard": {"enabled": True}}}, "web-dashboard-ro"), "Deployment", "dashboard")
    (pc,) = plain["spec"]["template"]["spec"]["containers"]
    need("CELERIAC_DASHBOARD_TOKEN_FILE" not in env_of(pc), "a read-only dashboard gets a token file")
    ok("web dashboard: `celeriac dashboard` on 8080 behind a ClusterIP Service, login from a Secret "
       "(a token, or basic auth from its username and password keys; read-only without), TCP probes, "
       "reachable through the NetworkPolicy only from dashboardFrom")


def check_beat() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["daemons"]["beat"]
    need(values["replicaCount"] == 1 and values["strategy"]["type"] == "RollingUpdate"
         and values["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, f"beat defaults {values}")
    need(values["flows"] == {} and values["existingFlowsConfigMap"] == "", "beat schedules flows by default")
    docs = docs_for("beat-flows")
    beat = one(docs, "Deployment", "beat")
    pod = beat["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    need(beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1,
         f"beat replicas/strategy {beat['spec']}")
    wpod = worker(docs)["spec"]["template"]["spec"]
    (wc,) = wpod["containers"]
    need(c["securityContext"] == wc["securityContext"] and c["securityContext"]["readOnlyRootFilesystem"] is True
         and pod["securityContext"] == wpod["securityContext"], "beat security settings differ from the worker's")
    need(pod["automountServiceAccountToken"] is False, "beat mounts the service account token")
    need(set(credential_files(pod, c)) == {"AMQP_ADDR", "REDIS_URL"}, "beat broker and store URLs from the Secret")
    need(beat["spec"]["selector"]["matchLabels"] != worker(docs)["spec"]["selector"]["matchLabels"],
         "beat selector overlaps the worker's")
    # Beat serves its metrics and probes on 9465 by default.
    (port,) = c["ports"]
    need(port == {"name": "metrics", "containerPort": 9465, "protocol": "TCP"}, f"beat port {port}")
    need(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz",
         "beat probes")
    need(env_of(c)["CELERIAC_METRICS_ADDR"]["value"] == "0.0.0.0:9465", "beat metrics address")
    pdb = one(docs, "PodDisruptionBudget", "beat")
    need(pdb["spec"] == {"maxUnavailable": 1, "selector": beat["spec"]["selector"]}, f"beat PDB {pdb['spec']}")
    # Without a port: no probes, no PodMonitor, and the server is off.
    plain = one(render({"daemons": {"beat": {"enabled": True, "metricsPort": None, "flows": BEAT_FLOWS}}},
                       "beat-no-metrics"), "Deployment", "beat")
    (pc,) = plain["spec"]["template"]["spec"]["containers"]
    need("livenessProbe" not in pc and "ports" not in pc, "beat without metricsPort has probes")
    need(env_of(pc)["CELERIAC_METRICS_ADDR"]["value"] == "off", "beat without metricsPort still serves")
    ok("beat: 1 replica, RollingUpdate (surge 1, unavailable 0); worker's security settings and Secret; "
       "own selector; /metrics, /healthz and /readyz on 9465 with probes and a PDB; none without a metrics port")
    # The flows: a ConfigMap holding them byte for byte...
    cms = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "beat"]
    need(len(cms) == 1, f"expected one flows ConfigMap, got {len(cms)}")
    cm = cms[0]
    need(cm["data"] == BEAT_FLOWS, f"flows ConfigMap data {cm['data']}")
    need(all(isinstance(yaml.safe_load(t), dict) for t in cm["data"].values()), "a flow in the ConfigMap is not a mapping")
    # ... mounted read-only; beside the credentials, the only volume: beat writes nothing.
    (vol,) = [v for v in pod["volumes"] if v["name"] != "credentials"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    need(vol["configMap"]["name"] == cm["metadata"]["name"] and mount["name"] == vol["name"]
         and mount["mountPath"] == FLOWS_DIR and mount["readOnly"] is True, f"flows volume {vol}, mount {mount}")
    need(c["command"] == ["celeriac"] and c["args"] == ["beat", FLOWS_DIR], f"beat command {c['command']} {c['args']}")
    ok(f"beat-flows: ConfigMap {cm['metadata']['name']} holds {', '.join(sorted(BEAT_FLOWS))} byte for byte, "
       f"mounted read-only at {FLOWS_DIR} (the pod's only volume); args [beat, {FLOWS_DIR}]")
    # A changed flow changes the pod template (a rollout), nothing else does.
    ann = beat["spec"]["template"]["metadata"]["annotations"]
    need(re.fullmatch(r"[0-9a-f]{64}", ann.get("checksum/flows", "")) and "checksum/secret" in ann, f"annotations {ann}")
    again = one(render(SCENARIOS["beat-flows"]), "Deployment", "beat")
    need(again["spec"]["template"] == beat["spec"]["template"], "the same flows render a different pod template")
    edited = deep_merge(SCENARIOS["beat-flows"], {"daemons": {"beat": {"flows": {"cache.yml": BEAT_FLOWS["cache.yml"] + "\n# edited"}}}})
    changed = render(edited)
    eann = one(changed, "Deployment", "beat")["spec"]["template"]["metadata"]["annotations"]
    need(eann["checksum/flows"] != ann["checksum/flows"], "an edited flow keeps the checksum: beat would not restart")
    need(worker(changed)["spec"]["template"] == worker(docs)["spec"]["template"], "an edited flow restarts the workers")
    ok("beat-flows: checksum/flows annotation; an edited flow changes it (beat restarts), the workers do not roll")
    check_flows_with_beat(cm["data"])

    full = docs_for("full")
    beat = one(full, "Deployment", "beat")
    (c,) = beat["spec"]["template"]["spec"]["containers"]
    ann = beat["spec"]["template"]["metadata"]["annotations"]
    need(beat["spec"]["replicas"] == 2 and ann["team"] == "shop" and "checksum/flows" in ann, f"full beat {ann}")
    need(c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["ports"][0]["containerPort"] == 9465,
         "beat probes with a metrics port")
    need(env_of(c)["CELERIAC_METRICS_ADDR"]["value"] == "0.0.0.0:9465", "beat CELERIAC_METRICS_ADDR")
    ok("full: two beat replicas with podAnnotations beside checksum/flows; probes and port 9465 with metricsPort")

    docs = docs_for("beat-existing-flows")
    beat = one(docs, "Deployment", "beat")
    pod = beat["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    need(not [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "beat"],
         "a flows ConfigMap is rendered although existingFlowsConfigMap is set")
    (vol,) = [v for v in pod["volumes"] if "configMap" in v]
    need(vol["configMap"]["name"] == "shop-flows" and c["volumeMounts"][0]["mountPath"] == FLOWS_DIR, f"volume {vol}")
    need(c["args"] == ["beat", FLOWS_DIR, "/opt/flows/extra.yaml"], f"args {c['args']} (the directory given twice?)")
    need("annotations" not in beat["spec"]["template"]["metadata"], "annotations without chart flows or Secret")
    ok("beat-existing-flows: ConfigMap shop-flows mounted, none rendered, no checksum; "
       "a flows directory already in args is not added twice")


def check_flows_with_beat(data: dict[str, str]) -> None:
    """`celeriac beat --check` on the flows laid out as the kubelet mounts a
    ConfigMap: each key a symlink into ..data, itself a symlink to a
    timestamped directory."""
    binary = next((b for b in (ROOT / "target" / "release" / "celeriac", ROOT / "target" / "debug" / "celeriac")
                   if b.is_file()), None)
    if binary is None:
        ok("beat --check: no celeriac binary in target/ (cargo build --bin celeriac); flows checked as YAML only")
        return
    with tempfile.TemporaryDirectory(prefix="flows-") as t:
        mount = Path(t)
        stamp = mount / "..2025_01_01_00_00_00.000000001"
        stamp.mkdir()
        for name, text in data.items():
            (stamp / name).write_text(text)
            (mount / name).symlink_to(Path("..data") / name)
        (mount / "..data").symlink_to(stamp.name)
        out = run([str(binary), "beat", "--check", str(mount)])
    names = {yaml.safe_load(t)["name"] for t in data.values()}
    seen = {line.split(":", 1)[0] for line in out.splitlines() if "  next " in line}
    need(seen == names, f"beat --check saw flows {seen}, expected {names}:\n{out}")
    ok(f"beat --check ({binary.relative_to(ROOT)}) on a ConfigMap-style mount: schedules "
       + "; ".join(" ".join(line.split("  overlap")[0].split()) for line in out.splitlines() if "  next " in line))


def check_autoscaling() -> None:
    docs = docs_for("keda")
    dep = worker(docs)
    need("replicas" not in dep["spec"], "replicas set while KEDA manages them")
    need(not by_kind(docs, "HorizontalPodAutoscaler"), "HPA rendered beside KEDA")
    so = one(docs, "ScaledObject")
    ta = one(docs, "TriggerAuthentication")
    secret = one(docs, "Secret")
    queues = [t["metadata"]["queueName"] for t in so["spec"]["triggers"]]
    need(queues == ["shop.q.default", "shop.q.emails"], f"trigger queues {queues}")
    need(so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "scaleTargetRef")
    need(so["spec"]["idleReplicaCount"] == 0 and so["spec"]["fallback"]["replicas"] == 2, "idle/fallback")
    need(so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"], "behavior")
    need(all(t["authenticationRef"]["name"] == ta["metadata"]["name"] for t in so["spec"]["triggers"]), "authRef")
    (ref,) = ta["spec"]["secretTargetRef"]
    need(ref["name"] == secret["metadata"]["name"] and ref["key"] == "AMQP_ADDR", f"TriggerAuthentication {ref}")
    rule = one(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    need("CeleriacNoWorkersUp" not in alerts, "CeleriacNoWorkersUp kept while KEDA scales to zero")
    ok("keda: ScaledObject on shop.q.default and shop.q.emails, TriggerAuthentication from the Secret, "
       "no replicas, no HPA; scale-to-zero drops CeleriacNoWorkersUp")
    docs = docs_for("keda-http")
    ta, so, secret = one(docs, "TriggerAuthentication"), one(docs, "ScaledObject"), one(docs, "Secret")
    (ref,) = ta["spec"]["secretTargetRef"]
    need(ref["key"] == "RABBITMQ_MANAGEMENT_URL" and ref["key"] in secret["data"], f"http ref {ref}")
    need(so["spec"]["triggers"][0]["metadata"]["protocol"] == "http", "protocol http")
    ok("keda-http: management URL from the Secret")
    docs = docs_for("hpa")
    hpa = one(docs, "HorizontalPodAutoscaler")
    need("replicas" not in worker(docs)["spec"], "replicas set while the HPA manages them")
    need(hpa["spec"]["scaleTargetRef"]["name"] == worker(docs)["metadata"]["name"], "HPA target")
    need({m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}, "HPA metrics")
    need(not by_kind(docs, "ScaledObject"), "ScaledObject without KEDA")
    ok("hpa: HorizontalPodAutoscaler on cpu and memory when KEDA is off; no replicas in the Deployment")


def check_existing_secret() -> None:
    docs = docs_for("existing-secret")
    need(not by_kind(docs, "Secret"), "a Secret is rendered although existingSecret is set")
    c = worker(docs)["spec"]["template"]["spec"]["containers"][0]
    env = env_of(c)
    files = credential_files(worker(docs)["spec"]["template"]["spec"], c)
    need({s for s, _ in files.values()} == {"celeriac-urls"} and len(files) == 2, f"URLs not from existingSecret: {files}")
    (ref,) = one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    need(ref["name"] == "celeriac-urls", "TriggerAuthentication not from existingSecret")
    ann = worker(docs)["spec"]["template"]["metadata"]["annotations"]
    need(ann == {"team": "shop"}, f"pod annotations {ann}")
    ok("existing-secret: no Secret rendered; worker env and KEDA read celeriac-urls")


def load_alert_rules() -> list[dict]:
    data = yaml.safe_load(ALERTS.read_text())
    return [r for g in data["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(celeriac_[a-z_]+)", expr))
    names |= set(re.findall(r'__name__=~"([^"]+)"', expr))
    out = set()
    for n in names:
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        out.add(base if base in METRICS else n)
    return out


def check_alert_rules(tmp: Path) -> None:
    run(["promtool", "check", "rules", str(ALERTS)])
    rules = load_alert_rules()
    names = [r["alert"] for r in rules]
    need(len(names) == len(set(names)), "duplicate alert names")
    for r in rules:
        need(r.get("labels", {}).get("severity") in SEVERITIES, f"{r['alert']}: severity label")
        ann = r.get("annotations", {})
        need(all(ann.get(k) for k in ("summary", "description", "runbook")),
             f"{r['alert']}: needs summary, description and runbook annotations")
        need('job="celeriac"' in r["expr"], f"{r['alert']}: does not select job=\"celeriac\"")
        unknown = metric_names(r["expr"]) - METRICS
        need(not unknown, f"{r['alert']}: unknown metrics {unknown}")
    ok(f"promtool check rules files/alerts.yaml: {len(rules)} alerts, each with severity, "
       "summary, description, runbook and known metrics only")

    # Every alert must be shown to fire on a bad series and to stay silent.
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    fires, silent = set(), set()
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else silent).add(a["alertname"])
    need(set(names) <= fires, f"alerts never shown to fire: {sorted(set(names) - fires)}")
    need(set(names) <= silent, f"alerts never shown to stay silent: {sorted(set(names) - silent)}")
    out = run(["promtool", "test", "rules", str(ALERT_TESTS)])
    need("SUCCESS" in out, out)
    ok(f"promtool test rules tests/alerts_test.yaml: {len(tests['tests'])} cases; "
       f"all {len(names)} alerts fire on a bad series and stay silent on a healthy one")

    # The PrometheusRule is the same rules, and passes the same tests.
    rule = one(docs_for("monitoring"), "PrometheusRule")
    need(rule["metadata"]["labels"].get("release") == "prometheus", "PrometheusRule labels")
    extracted = {"groups": rule["spec"]["groups"]}
    need(extracted == yaml.safe_load(ALERTS.read_text()),
         "the rendered PrometheusRule differs from files/alerts.yaml")
    rdir = tmp / "rendered"
    (rdir / "files").mkdir(parents=True)
    (rdir / "tests").mkdir()
    (rdir / "files" / "alerts.yaml").write_text(yaml.safe_dump(extracted, sort_keys=False))
    shutil.copy(ALERT_TESTS, rdir / "tests" / "alerts_test.yaml")
    run(["promtool", "check", "rules", str(rdir / "files" / "alerts.yaml")])
    out = run(["promtool", "test", "rules", str(rdir / "tests" / "alerts_test.yaml")])
    need("SUCCESS" in out, out)
    ok("PrometheusRule (rendered): equal to files/alerts.yaml; promtool check rules and test rules pass on it")

    rule = one(docs_for("monitoring-custom"), "PrometheusRule")
    rrules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    need("CeleriacDeadLetterQueueNotEmpty" not in {r["alert"] for r in rrules}, "disabledAlerts ignored")
    need(len(rrules) == len(rules) - 1, "alerts lost")
    for r in rrules:
        need('job="shop-workers"' in r["expr"] and 'job="celeriac"' not in r["expr"], f"jobName in {r['alert']}")
        need(r["labels"]["team"] == "shop" and r["labels"]["severity"], f"labels of {r['alert']}")
        need(r["annotations"]["runbook_url"] == f"https://runbooks.example/celeriac#{r['alert'].lower()}",
             "runbook_url")
    by_name = {r["alert"]: r for r in rrules}
    need("> 7200 # threshold:stuckSeconds" in by_name["CeleriacTaskStuck"]["expr"], "stuckSeconds not applied")
    need(by_name["CeleriacQueueUnconsumed"]["for"] == "20m", "unconsumedFor not applied")
    need("> 0.8 # threshold:retryRatio" in by_name["CeleriacRetryStorm"]["expr"], "retryRatio not applied")
    need("> 1000 # threshold:backlogMessages" in by_name["CeleriacBacklogGrowing"]["expr"], "default threshold lost")
    sm = one(docs_for("monitoring-custom"), "ServiceMonitor")
    need(sm["spec"]["endpoints"][0]["relabelings"][0]["replacement"] == "shop-workers", "ServiceMonitor job")
    (tmp / "custom.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    run(["promtool", "check", "rules", str(tmp / "custom.yaml")])
    ok("monitoring-custom: jobName, extra alert labels, runbook_url, thresholds and disabledAlerts applied; "
       "promtool check rules passes")

    # Per-queue and per-task thresholds: a copy of the alert per override,
    # the alert itself without the overridden series; promtool tests that
    # each fires at its own threshold, once.
    rule = one(docs_for("monitoring-overrides"), "PrometheusRule")
    orules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    count = {n: sum(1 for r in orules if r["alert"] == n) for n in ("CeleriacTaskStuck", "CeleriacRunTimeSloBreached")}
    need(count == {"CeleriacTaskStuck": 3, "CeleriacRunTimeSloBreached": 3}, f"override rules {count}")
    need(len(orules) == len(rules) + 4, "alerts lost or added besides the overrides")
    stuck = [r["expr"] for r in orules if r["alert"] == "CeleriacTaskStuck"]
    need("unless on (queue)" in stuck[0] and 'queue="reports"' in stuck[1] and "> 7200 # threshold:stuckSeconds" in stuck[1],
         f"stuck overrides {stuck}")
    odir = tmp / "overrides"
    (odir / "files").mkdir(parents=True)
    (odir / "tests").mkdir()
    (odir / "files" / "alerts.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(OVERRIDE_TESTS, odir / "tests" / "alerts_overrides_test.yaml")
    run(["promtool", "check", "rules", str(odir / "files" / "alerts.yaml")])
    out = run(["promtool", "test", "rules", str(odir / "tests" / "alerts_overrides_test.yaml")])
    need("SUCCESS" in out, out)
    otests = yaml.safe_load(OVERRIDE_TESTS.read_text())
    ok(f"monitoring-overrides: thresholdOverrides add one rule per override and leave their series out of the "
       f"alert; promtool test rules tests/alerts_overrides_test.yaml: {len(otests['tests'])} cases pass "
       "(each override fires at its own threshold, once; beatMissedTicks applied)")


def check_dashboard(tmp: Path) -> None:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    exprs: list[tuple[str, str]] = [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]
    need(all(p.get("targets") for p in panels), "a panel without queries")
    ids = [p["id"] for p in dash["panels"]]
    need(len(ids) == len(set(ids)), "duplicate panel ids")
    used = set()
    for _, e in exprs:
        used |= metric_names(e)
    need(not used - METRICS - {"up"}, f"dashboard uses unknown metrics {used - METRICS}")
    covered = {
        "throughput": "celeriac_tasks_succeeded_total",
        "failures": "celeriac_tasks_failed_total",
        "dead letters": "celeriac_tasks_dead_lettered_total",
        "queue depth": "celeriac_queue_messages",
        "queue wait": "celeriac_task_queue_wait_seconds",
        "run time": "celeriac_task_run_seconds",
        "in flight": "celeriac_tasks_in_flight",
        "reconnects": "celeriac_broker_reconnects_total",
    }
    for what, metric in covered.items():
        need(metric in used, f"no dashboard panel for {what} ({metric})")
    need('kind=\\"dlq\\"' in DASHBOARD.read_text(), "no DLQ depth panel")
    need(sum("histogram_quantile" in e for _, e in exprs) >= 6, "wait/run-time quantile panels")
    # Grafana variables replaced by values, every query checked by promtool.
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "${datasource}": "x"}
    rules = []
    for i, (title, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        e = re.sub(r"\$\{?(namespace|queue|task)\}?", ".*", e)
        need("$" not in e, f"unknown variable in {title}: {e}")
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    (tmp / "dashboard_rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(["promtool", "check", "rules", str(tmp / "dashboard_rules.yaml")])
    ok(f"dashboard.json: {len(panels)} panels ({', '.join(sorted(covered))}); "
       f"all {len(exprs)} queries parse (promtool) and use known metrics")
    cm = one(docs_for("defaults"), "ConfigMap")
    need(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "grafana_dashboard label")
    need(json.loads(cm["data"]["celeriac.json"]) == dash, "ConfigMap JSON differs from files/dashboard.json")
    ok("dashboard ConfigMap: grafana_dashboard label, JSON equal to files/dashboard.json")


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


def main() -> int:
    started = time.monotonic()
    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate {kubernetes_validate.__version__}, "
          f"{run(['promtool', '--version']).splitlines()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="chart-check-") as t:
        tmp = Path(t)
        section("values", check_values_documented)
        section("helm lint", check_lint)
        section("packaged files", check_packaged_files)
        section("render and validate", check_render_and_validate)
        section("refused values", check_bad_values)
        section("worker Deployment", check_worker_deployment)
        section("beat", check_beat)
        section("exporter", check_exporter)
        section("web dashboard", check_web_dashboard)
        section("autoscaling", check_autoscaling)
        section("existing Secret", check_existing_secret)
        section("security", lambda: check_security.check(docs_for))
        section("alert rules", lambda: check_alert_rules(tmp))
        section("dashboard", lambda: check_dashboard(tmp))
        section("worker source", check_worker_source)
        section("Dockerfile", check_dockerfile)
    took = time.monotonic() - started
    if failures:
        print(f"\nchart checks FAILED ({len(failures)} of them, {len(checked)} checks passed, {took:.0f}s):",
              file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"chart checks took {took:.0f}s")
    print(f"charts: {len(checked)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
