"""Checks of the chart's monitoring: the alert rules (promtool check and test
rules, on files/alerts.yaml and on the rendered PrometheusRule with its
options and per-queue/per-task thresholds) and the Grafana dashboard, both
against the worker's metrics.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from chart_support import CHART, need, ok, one, run
from check_render import docs_for

ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = CHART / "tests" / "alerts_test.yaml"
OVERRIDE_TESTS = CHART / "tests" / "alerts_overrides_test.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"

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
