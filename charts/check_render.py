"""Rendering checks of charts/celeriac: values.yaml documented and covered by
its schema, strict helm lint, every values set (SCENARIOS) rendered and
validated against the Kubernetes schemas (custom kinds structurally), and
bad values refused. The rendered documents are kept for the other checks
(``docs_for``).
"""

from __future__ import annotations

import json
import re

import helm_python as helm
import kubernetes_validate
import yaml

import check_security
from chart_support import CHART, CheckFailed, need, ok, render, with_base

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
            "resultTtl": "6h", "keyTtl": "2d",
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
