"""Checks of charts/celeriac, its alert rules and dashboard, and the Dockerfile.

Run through charts/check, which provides the venv and promtool. Every check
prints one line; the first failure of a section is reported with its cause
and the script exits 1 after all sections ran.

The checks are in modules by what they check: check_render (values, lint,
rendering, refused values), check_workloads (the worker and the daemons,
autoscaling), check_security, check_monitoring (alert rules, dashboard)
and check_image (worker source, Dockerfile); chart_support is what they
share.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm
import kubernetes_validate

import check_security
from chart_support import checked, failures, run, section
from check_image import check_dockerfile, check_worker_source
from check_monitoring import check_alert_rules, check_dashboard
from check_render import (check_bad_values, check_lint, check_packaged_files, check_render_and_validate,
                          check_values_documented, docs_for)
from check_workloads import (check_autoscaling, check_beat, check_existing_secret, check_exporter,
                             check_web_dashboard, check_worker_deployment)


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
