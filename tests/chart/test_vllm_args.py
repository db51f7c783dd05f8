"""The vLLM sidecar the chart renders and the `vllm serve` the local executor starts get the
same options: both come from skillmix/backends/vllm_server.py (`vllm_options`)."""

from __future__ import annotations

from typing import Any

from skillmix.backends.vllm_server import vllm_api_server_args, vllm_serve_argv
from skillmix.config import Experiment
from skillmix.k8s.profiles import ClusterProfile
from skillmix.k8s.values import build_values
from skillmix.pipeline.context import resolve_context
from skillmix.pipeline.plan import plan_tasks
from tests.chart.helpers import Helm

PROFILE = {
    "namespace": "evals",
    "image": "registry:5000/skillmix/skillmix:1.2.3",
    "vllm_image": "vllm/vllm-openai:v0.11.0",
    "store": "s3://bucket/runs/",
}


def model_container(job: dict[str, Any]) -> dict[str, Any]:
    pod = job["spec"]["template"]["spec"]
    (model,) = [c for c in pod.get("initContainers", []) if c["name"] == "model"]
    return dict(model)


def test_the_rendered_vllm_sidecar_has_the_local_servers_options(helm: Helm) -> None:
    e = Experiment.model_validate(
        {
            "name": "vllm-args",
            "ks": [2],
            "combinations": 2,
            "students": [
                {
                    "name": "qwen",
                    "backend": "vllm",
                    "model": "qwen-chat",
                    "vllm": {
                        "model": "Qwen/Qwen2.5-7B-Instruct",
                        "tensor_parallel_size": 2,
                        "args": ["--max-model-len", "4096", "--dtype", "bfloat16"],
                    },
                }
            ],
            "grader": {"name": "g", "backend": "mock", "model": "g", "rounds": 1},
        }
    )
    ctx = resolve_context(e)
    ctx.sharded = True
    units = plan_tasks(e, sharded=True).units
    values = build_values(
        ctx,
        ClusterProfile.model_validate(PROFILE),
        "prod",
        attempt=1,
        generation=units,
        grading=units,
        sidecar_port=8123,
    )
    (job, *_) = helm.template(extra=values).jobs("generation")
    spec = e.students[0]
    rendered = [str(a) for a in model_container(job)["args"]]
    assert rendered == vllm_api_server_args(spec, port=8123)
    local = vllm_serve_argv(spec, port=8123)  # both on loopback
    assert local[2:] == [rendered[1], *rendered[2:]]  # `serve MODEL` for `--model MODEL`
