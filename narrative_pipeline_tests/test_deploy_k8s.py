"""deploy/k8s: Helm values and manifests, and the pods Dagster would really create from them.

No cluster runs here, so the step pods are built the way dagster-k8s builds them (the run
launcher's config from the Helm values, the code location's config, the step's op tags, the
executor's per-step config) and inspected: `stage1_checkpoint` must ask for one GPU, every other
step must not.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytest.importorskip("dagster_k8s", reason="dagster-k8s comes with the `deploy` extra")

from dagster import DagsterRun  # noqa: E402
from dagster._config import process_config  # noqa: E402
from dagster._core.execution.api import create_execution_plan  # noqa: E402
from dagster_k8s import K8sRunLauncher  # noqa: E402
from dagster_k8s.container_context import K8sContainerContext  # noqa: E402
from dagster_k8s.job import (  # noqa: E402
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict  # noqa: E402
from kubernetes import client as k8s  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
GPU = "nvidia.com/gpu"
GPU_STEP = "stage1_checkpoint"
KINDS = {
    "Service": k8s.V1Service,
    "StatefulSet": k8s.V1StatefulSet,
    "ConfigMap": k8s.V1ConfigMap,
    "PersistentVolumeClaim": k8s.V1PersistentVolumeClaim,
    "NetworkPolicy": k8s.V1NetworkPolicy,
}


def load_values() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "values.yaml").read_text())


def load_manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "values.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def snake_case_keys(node: Any) -> Any:
    """What the chart's `snakeCaseDictRecursive` does to runK8sConfig before dagster-k8s sees it."""
    if isinstance(node, dict):
        return {
            re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): snake_case_keys(v) for k, v in node.items()
        }
    if isinstance(node, list):
        return [snake_case_keys(v) for v in node]
    return node


def user_deployment() -> dict[str, Any]:
    (deployment,) = load_values()["dagster-user-deployments"]["deployments"]
    return deployment


def test_helm_values_select_k8s_run_launcher_and_daemon() -> None:
    values = load_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["enabled"] is True
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["dagster-user-deployments"]["enabled"] is True
    # No credential in the values: the Postgres password is set at install time or pre-created.
    assert "postgresqlPassword" not in values["postgresql"]


def test_helm_run_launcher_config_is_accepted_by_dagster_k8s(tmp_path: Path) -> None:
    launcher = build_run_launcher(tmp_path)
    assert launcher.run_k8s_config["container_config"]["resources"]["requests"]["memory"] == "4Gi"
    assert launcher.job_namespace == "narrative"


def test_code_location_serves_the_k8s_definitions_file_the_image_ships() -> None:
    deployment = user_deployment()
    args = deployment["dagsterApiGrpcArgs"]
    target = args[args.index("-f") + 1]
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    assert f"COPY deploy/k8s/definitions_k8s.py {target}" in dockerfile
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True


def test_manifests_are_valid_kubernetes_objects() -> None:
    manifests = load_manifests()
    assert {kind for kind, _ in manifests} == set(KINDS)
    for (kind, name), doc in manifests.items():
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
        # Raises on any key the Kubernetes API model does not have (typos, wrong nesting).
        k8s_model_from_dict(KINDS[kind], k8s_snake_case_dict(KINDS[kind], body))
        assert kind != "Secret", f"{name}: credentials belong in a Secret created by the user"


def test_store_server_is_a_single_writer_statefulset_behind_its_service() -> None:
    manifests = load_manifests()
    store = manifests[("StatefulSet", "narrative-store")]["spec"]
    service = manifests[("Service", "narrative-store")]["spec"]
    env = manifests[("ConfigMap", "narrative-pipeline-env")]["data"]
    assert store["replicas"] == 1
    assert service["selector"].items() <= store["template"]["metadata"]["labels"].items()
    (container,) = store["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["store", "serve"]
    port = args[args.index("--port") + 1]
    assert env["SIMD_R_DRIVE_SERVER_HOST"] == "narrative-store"
    assert env["SIMD_R_DRIVE_SERVER_PORT"] == port == str(service["ports"][0]["port"])
    (mount,) = container["volumeMounts"]
    assert args[2].startswith(mount["mountPath"] + "/"), "store file is not on the volume"
    assert mount["name"] in {t["metadata"]["name"] for t in store["volumeClaimTemplates"]}


def test_pipeline_config_points_at_the_mysql_option_and_holds_no_secret() -> None:
    manifests = load_manifests()
    env = manifests[("ConfigMap", "narrative-pipeline-env")]["data"]
    assert env["MYSQL_HOST"] == "narrative-mysql"
    assert ("Service", env["MYSQL_HOST"]) in manifests
    assert not [k for k in env if re.search("PASSWORD|SECRET|TOKEN", k)]
    assert env["NARRATIVE_CSV_DIR"].startswith(env["NARRATIVE_DATA_DIR"])
    deployment = user_deployment()
    assert [c["name"] for c in deployment["envConfigMaps"]] == ["narrative-pipeline-env"]
    claim = deployment["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in manifests
    assert "ReadWriteMany" in manifests[("PersistentVolumeClaim", claim)]["spec"]["accessModes"]
    assert deployment["volumeMounts"][0]["mountPath"] == env["NARRATIVE_DATA_DIR"]


# --- the pods dagster-k8s would create ----------------------------------------------------------


FAKE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: test, user: {token: not-a-real-token}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: narrative}}]
current-context: test
"""


def build_run_launcher(tmp_path: Path) -> K8sRunLauncher:
    """The K8sRunLauncher the chart's instance ConfigMap would configure from values.yaml."""
    helm = load_values()["runLauncher"]["config"]["k8sRunLauncher"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    config = {
        "instance_config_map": "dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home",
        "postgres_password_secret": "dagster-postgresql-secret",
        "job_namespace": "narrative",
        "service_account_name": "dagster",
        "image_pull_policy": helm["imagePullPolicy"],
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "run_k8s_config": snake_case_keys(helm["runK8sConfig"]),
    }
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    return K8sRunLauncher.from_config_value(None, result.value)


def load_k8s_definitions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    monkeypatch.setenv("NARRATIVE_DATA_DIR", str(tmp_path / "data"))
    spec = importlib.util.spec_from_file_location("definitions_k8s", K8S_DIR / "definitions_k8s.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chart_container_context(deployment: dict[str, Any]) -> dict[str, Any]:
    """DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT as the chart's user-deployment template writes it
    (includeConfigInLaunchedRuns): it is merged OVER the run launcher's config in every run and
    step pod, so e.g. `resources` set on the code location would resize them all."""
    context: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"dagster-{deployment['name']}-user-env"]
        + [c["name"] for c in deployment.get("envConfigMaps", [])],
        "namespace": "narrative",
        "service_account_name": "dagster-dagster-user-deployments-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    for value_key, context_key in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
    ):
        if deployment.get(value_key):
            context[context_key] = deployment[value_key]
    if deployment.get("envSecrets"):
        context["env_secrets"] = [s["name"] for s in deployment["envSecrets"]]
    return {"k8s": context}


@pytest.fixture(scope="module")
def step_pods(tmp_path_factory: pytest.TempPathFactory) -> dict[str, k8s.V1PodSpec]:
    """step key -> the pod spec of the Kubernetes Job the k8s_job_executor would launch."""
    tmp_path = tmp_path_factory.mktemp("k8s")
    with pytest.MonkeyPatch.context() as monkeypatch:
        module = load_k8s_definitions(monkeypatch, tmp_path)
        job = module.defs.resolve_implicit_global_asset_job_def()
        assert job.executor_def.name.startswith("k8s"), "not the k8s_job_executor"
        executor_config = job.executor_def.config_schema.resolve_config({}).value["config"]
        per_step = executor_config["per_step_k8s_config"]
        plan = create_execution_plan(job)

    launcher = build_run_launcher(tmp_path)
    deployment = user_deployment()
    code_location = K8sContainerContext.create_from_config(chart_container_context(deployment))
    run = DagsterRun(job_name=job.name, run_id="0123456789abcdef")
    run_context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    pods = {}
    for step in plan.get_steps_to_execute_in_topo_order():
        # The same merge order as dagster_k8s.executor.K8sStepHandler._get_container_context.
        context = (
            run_context.merge(code_location)
            .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
            .merge(
                K8sContainerContext(
                    run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                        per_step.get(step.node_handle.name, {})
                    )
                )
            )
        )
        job_config = context.get_k8s_job_config("registry.example.com/narrative:test", launcher)
        k8s_job = construct_dagster_k8s_job(
            job_config,
            ["dagster", "api", "execute_step"],
            f"dagster-step-{step.key.replace('_', '-')}"[:63],
            user_defined_k8s_config=context.run_k8s_config,
        )
        pods[step.key] = k8s_job.spec.template.spec
    return pods


def limits_of(pod: k8s.V1PodSpec) -> dict[str, str]:
    return pod.containers[0].resources.limits or {}


def test_training_step_pod_requests_one_gpu_and_tolerates_gpu_nodes(
    step_pods: dict[str, k8s.V1PodSpec],
) -> None:
    pod = step_pods[GPU_STEP]
    assert str(limits_of(pod)[GPU]) == "1"
    assert any(t.key == GPU and t.effect == "NoSchedule" for t in pod.tolerations or [])
    # The Helm defaults still apply underneath (memory request/limit).
    assert pod.containers[0].resources.requests["memory"] == "4Gi"


def test_every_other_step_runs_on_a_cpu_pod(step_pods: dict[str, k8s.V1PodSpec]) -> None:
    others = {key: pod for key, pod in step_pods.items() if key != GPU_STEP}
    assert {"raw_records", "embeddings", "triplets"} <= set(others)
    for key, pod in others.items():
        assert GPU not in limits_of(pod), key
        assert not pod.tolerations, key
        assert limits_of(pod)["memory"] == "12Gi", key


def test_step_pods_get_the_shared_volume_and_the_pipeline_environment(
    step_pods: dict[str, k8s.V1PodSpec],
) -> None:
    for key, pod in step_pods.items():
        container = pod.containers[0]
        assert [m.mount_path for m in container.volume_mounts or []] == ["/data"], key
        sources = {(s.config_map_ref or s.secret_ref).name for s in container.env_from}
        assert {"narrative-pipeline-env", "narrative-db-credentials"} <= sources, key
