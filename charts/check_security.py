"""Checks of the chart's security settings: no default credentials, TLS and
signing Secrets wired to the binaries' flags, the metrics bearer token and
the NetworkPolicy."""

from __future__ import annotations

from typing import Callable

from chart_support import CheckFailed, by_kind, env_of, need, ok, one, render, worker

SCENARIOS: dict[str, dict] = {
    "security": {
        "credentials": {"amqpAddr": "amqps://shop:s3cret@rabbitmq:5671/%2f",
                        "redisUrl": "rediss://:s3cret@redis-master:6380"},
        "tls": {"broker": {"existingSecret": "rabbitmq-client-tls"},
                "redis": {"existingSecret": "redis-client-tls", "certKey": "", "keyKey": ""}},
        "signing": {"existingSecret": "celeriac-signing"},
        "metrics": {"tokenSecret": "celeriac-metrics-token"},
        "networkPolicy": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "daemons": {"beat": {"enabled": True, "flows": {
            "cache.yml": "name: cache\ntasks:\n  refresh: {task: cache.refresh, schedule: 600}"}}},
    },
}

BAD_VALUES: dict[str, tuple[dict, str]] = {
    "no credentials": ({"credentials": {"amqpAddr": "", "redisUrl": ""}}, "no default credentials"),
    "no store URL": ({"credentials": {"redisUrl": ""}}, "redisUrl"),
    "client certificate without key": (
        {"tls": {"broker": {"existingSecret": "tls", "keyKey": ""}}}, "tls.broker.certKey needs"),
    "NetworkPolicy that admits nobody": (
        {"networkPolicy": {"enabled": True, "prometheusNamespaceSelector": None, "prometheusPodSelector": None}}, "networkPolicy"),
}

TLS_ENV = {
    "CELERIAC_TLS_CA": "/etc/celeriac/tls/broker/ca.crt",
    "CELERIAC_TLS_CERT": "/etc/celeriac/tls/broker/tls.crt",
    "CELERIAC_TLS_KEY": "/etc/celeriac/tls/broker/tls.key",
    "CELERIAC_REDIS_TLS_CA": "/etc/celeriac/tls/redis/ca.crt",
    "CELERIAC_SIGNING_KEYS": "/etc/celeriac/signing/signing-keys",
}


def mounted_secrets(pod: dict, container: dict) -> dict[str, str]:
    """Mount path -> Secret name of the container's Secret volumes."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    return {m["mountPath"]: secrets[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in secrets}


def check_no_default_credentials() -> None:
    try:
        render({}, bare=True)
    except CheckFailed:
        raise
    except Exception as e:  # HelmError
        need("no default credentials" in str(e), f"bare render refused without the reason: {e}")
        ok("no default credentials: the chart refuses to render without credentials.existingSecret or URLs")
        return
    raise CheckFailed("the chart renders with its default values, so it ships default credentials")


def check_files_reach_the_flags(docs: list[dict]) -> None:
    for dep in by_kind(docs, "Deployment"):
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = env_of(c)
        for var, path in TLS_ENV.items():
            need(env.get(var, {}).get("value") == path, f"{component}: {var} = {env.get(var)}, want {path}")
        need("CELERIAC_REDIS_TLS_CERT" not in env, f"{component}: Redis client cert set though certKey is empty")
        mounts = mounted_secrets(pod, c)
        need(mounts.get("/etc/celeriac/tls/broker") == "rabbitmq-client-tls"
             and mounts.get("/etc/celeriac/tls/redis") == "redis-client-tls"
             and mounts.get("/etc/celeriac/signing") == "celeriac-signing", f"{component}: mounts {mounts}")
        need(all(m.get("readOnly") for m in c["volumeMounts"] if m["mountPath"].startswith("/etc/celeriac/")),
             f"{component}: a Secret mounted writable")
    ok("security: workers and beat get CELERIAC_TLS_*, CELERIAC_REDIS_TLS_CA and CELERIAC_SIGNING_KEYS "
       "from read-only Secret mounts")


def check_metrics_token(docs: list[dict]) -> None:
    dep = worker(docs)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    need(env["CELERIAC_METRICS_TOKEN_FILE"]["value"] == "/etc/celeriac/metrics/token", "metrics token file env")
    need(mounted_secrets(pod, c).get("/etc/celeriac/metrics") == "celeriac-metrics-token", "token mount")
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    auth = endpoint.get("authorization")
    need(auth == {"type": "Bearer", "credentials": {"name": "celeriac-metrics-token", "key": "token"}},
         f"ServiceMonitor authorization {auth}")
    beat = one(docs, "Deployment", "beat")
    bpod = beat["spec"]["template"]["spec"]
    (bc,) = bpod["containers"]
    need(env_of(bc)["CELERIAC_METRICS_TOKEN_FILE"]["value"] == "/etc/celeriac/metrics/token", "beat token file env")
    need(mounted_secrets(bpod, bc).get("/etc/celeriac/metrics") == "celeriac-metrics-token", "beat token mount")
    (pm,) = [d for d in docs if d["kind"] == "PodMonitor"]
    (bend,) = pm["spec"]["podMetricsEndpoints"]
    need(bend.get("authorization") == auth, f"PodMonitor authorization {bend.get('authorization')}")
    ok("security: /metrics token from a Secret file, sent by the ServiceMonitor as a Bearer token")


def check_network_policy(docs: list[dict]) -> None:
    policy = one(docs, "NetworkPolicy")
    spec = policy["spec"]
    selector = spec["podSelector"]["matchLabels"]
    for dep in by_kind(docs, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        need(all(labels.get(k) == v for k, v in selector.items()),
             f"the NetworkPolicy does not select the pods of {dep['metadata']['name']}")
    need(spec["policyTypes"] == ["Ingress"], f"policyTypes {spec['policyTypes']}")
    (rule,) = spec["ingress"]
    need(rule["ports"] == [{"port": "metrics", "protocol": "TCP"}], f"ports {rule['ports']}")
    (peer,) = rule["from"]
    need(peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
         f"peer {peer}")
    ok("security: NetworkPolicy admits only the monitoring namespace, on the metrics port only")


def check_defaults(docs: list[dict]) -> None:
    need(not by_kind(docs, "NetworkPolicy"), "a NetworkPolicy by default")
    env = env_of(worker(docs)["spec"]["template"]["spec"]["containers"][0])
    need(not any(v.startswith(("CELERIAC_TLS", "CELERIAC_REDIS_TLS", "CELERIAC_SIGNING", "CELERIAC_METRICS_TOKEN"))
                 for v in env), f"security env by default: {sorted(env)}")
    ok("defaults: no TLS, signing or token settings and no NetworkPolicy unless asked")


def check(docs_for: Callable[[str], list[dict]]) -> None:
    check_no_default_credentials()
    docs = docs_for("security")
    check_files_reach_the_flags(docs)
    check_metrics_token(docs)
    check_network_policy(docs)
    check_defaults(docs_for("defaults"))
