"""Checks of the workloads charts/celeriac renders: the worker Deployment,
the daemons (beat and its flows, the exporter, the web dashboard),
autoscaling (KEDA or an HPA) and an existing Secret for the credentials.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import yaml

from chart_support import (CHART, ROOT, by_kind, credential_files, deep_merge, env_of, need, ok, one, render, run,
                           worker)
from check_render import BEAT_FLOWS, FLOWS_DIR, SCENARIOS, docs_for
from check_security import mounted_secrets

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
                     "CELERIAC_RESULT_TTL": "6h", "CELERIAC_KEY_TTL": "2d",
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
