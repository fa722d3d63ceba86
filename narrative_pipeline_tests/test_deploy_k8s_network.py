"""deploy/k8s: only the pipeline's pods may reach the store server (it has no authentication).

The NetworkPolicy must select the store's pods and admit, on the store port only, pods carrying
the store-client label; the pods Dagster launches (code location, runs, steps) must carry it.
The launched pods are built the way dagster-k8s builds them (helpers from test_deploy_k8s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("dagster_k8s", reason="dagster-k8s comes with the `deploy` extra")

from dagster import DagsterRun  # noqa: E402
from dagster_k8s.container_context import K8sContainerContext  # noqa: E402
from dagster_k8s.job import construct_dagster_k8s_job  # noqa: E402

from narrative_pipeline_tests.test_deploy_k8s import (  # noqa: E402
    build_run_launcher,
    chart_container_context,
    load_manifests,
    user_deployment,
)

CLIENT_LABEL = ("narrative-pipeline/store-client", "true")


def test_network_policy_admits_only_labelled_pods_on_the_store_port() -> None:
    manifests = load_manifests()
    policy = manifests[("NetworkPolicy", "narrative-store-clients")]["spec"]
    store = manifests[("StatefulSet", "narrative-store")]["spec"]
    service = manifests[("Service", "narrative-store")]["spec"]
    store_labels = store["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= store_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "no namespaceSelector / ipBlock: pods only"
    assert source["podSelector"]["matchLabels"] == dict([CLIENT_LABEL])
    assert [p["port"] for p in rule["ports"]] == [service["ports"][0]["port"]]
    # The store's own pods do not carry the client label (nothing else is admitted by accident).
    assert CLIENT_LABEL[0] not in store_labels


def test_pods_dagster_launches_carry_the_store_client_label(tmp_path: Path) -> None:
    deployment = user_deployment()
    assert deployment["labels"].get(CLIENT_LABEL[0]) == CLIENT_LABEL[1]  # code location pod
    launcher = build_run_launcher(tmp_path)
    code_location = K8sContainerContext.create_from_config(chart_container_context(deployment))
    run = DagsterRun(job_name="__ASSET_JOB", run_id="0123456789abcdef")
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False).merge(
        code_location
    )
    job_config = context.get_k8s_job_config("registry.example.com/narrative:test", launcher)
    job = construct_dagster_k8s_job(
        job_config,
        ["dagster", "api", "execute_run"],
        "dagster-run-0123",
        user_defined_k8s_config=context.run_k8s_config,  # how the chart's `labels` arrive
    )
    assert job.spec.template.metadata.labels.get(CLIENT_LABEL[0]) == CLIENT_LABEL[1]
