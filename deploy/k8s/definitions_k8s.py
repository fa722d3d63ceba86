"""Code location for Kubernetes: the pipeline's definitions with Dagster's `k8s_job_executor`.

The Helm values (deploy/k8s/values.yaml) serve this file (`dagster api grpc -f
/opt/narrative/definitions_k8s.py`), so every asset step of a run gets its own Kubernetes Job. A
step's pod is shaped by its op tag `dagster-k8s/config`: `stage1_checkpoint` asks for
`nvidia.com/gpu: 1` there and lands on a GPU node, the other steps run on CPU pods.

It stays outside `narrative_pipeline.definitions` because `dagster-k8s` is an optional extra
(`pip install .[deploy]`): a laptop running `dagster dev` needs neither it nor a cluster.
"""

from __future__ import annotations

from dagster import Definitions
from dagster_k8s import k8s_job_executor

from narrative_pipeline.definitions import defs as pipeline_defs

GPU_STEP = "stage1_checkpoint"

# GPU node pools are usually tainted `nvidia.com/gpu:NoSchedule` so that CPU work stays off them;
# only the training step tolerates the taint. (Where the cluster adds this toleration by itself
# for pods that request a GPU, e.g. GKE, it is harmless.) The GPU limit itself comes from the
# asset's own `dagster-k8s/config` tag.
GPU_STEP_K8S_CONFIG = {
    "pod_spec_config": {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    }
}

k8s_executor = k8s_job_executor.configured(
    {"per_step_k8s_config": {GPU_STEP: GPU_STEP_K8S_CONFIG}}, name="k8s_narrative"
)

defs = Definitions.merge(pipeline_defs, Definitions(executor=k8s_executor))
