"""Where weights and the Ray image come from: the stack's model bucket, its mirror Jobs, and the
Artifact Registry remote repository the pods pull the image through.

Weights: one regional bucket per stack; one Kubernetes Job per served (model, revision) copies
the Hugging Face snapshot into it (`serve/model_mirror.py`), before the RayService exists. The
Jobs are the only pods that carry the HF token. Ray's pods read the bucket as a Google service
account with read-only access (Workload Identity), and each replica's node copies its model
from there (Ray Serve LLM's gs:// `model_source`).

Why Ray's copy and not vLLM's Run:ai streamer, which reads gs:// without a local copy: Ray 2.60
supports it (`load_format: runai_streamer`), but the pinned `rayproject/ray-llm` image does not
ship `runai-model-streamer` (docker/ray-llm/Dockerfile and the rayllm lock files list no
runai package; ray-project/ray#52499: "after doing `pip install runai-model-streamer`
separately"). Installing it per replica (runtime_env pip) would add a download to every cold
start; a derived image is the next step (README, "Cold start").

Image: GKE image streaming serves only images in Artifact Registry ("Use Image streaming to
pull container images", https://cloud.google.com/kubernetes-engine/docs/how-to/image-streaming,
read 2026-11-26), so the pods pull Docker Hub's image through a remote repository the stack owns,
in the cluster's region.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

import serve.model_mirror
from infra.plan.mounted_code import code_volume, content_name, module_files
from infra.plan.node_pools import NodePoolSpec
from serve.catalog import ModelEntry
from serve.serve_config import HF_TOKEN_ENV
from serve.versions import RAY_LLM_IMAGE

# What the pure plan writes where the project id goes when none is known (`python -m infra.plan`
# without gcp:project); the program always passes the provider's project.
PROJECT_PLACEHOLDER: Final = "gcp-project"
BUCKET_SUFFIX: Final = "models"
# Kubernetes service accounts, each bound to its own Google service account.
RAY_KSA: Final = "ray"
MIRROR_KSA: Final = "model-mirror"
WORKLOAD_IDENTITY_ANNOTATION: Final = "iam.gke.io/gcp-service-account"
# Read-only for the replicas; the mirror also writes (objectUser: create, overwrite, delete
# objects, no IAM changes; the bucket's uniform access makes object ACLs moot).
READER_ROLE: Final = "roles/storage.objectViewer"
WRITER_ROLE: Final = "roles/storage.objectUser"
WORKLOAD_IDENTITY_ROLE: Final = "roles/iam.workloadIdentityUser"

MIRROR_CODE_PREFIX: Final = "model-mirror"
MIRROR_CODE_MOUNT_PATH: Final = "/opt/model-mirror"
MIRROR_SCRATCH_PATH: Final = "/scratch"
# Files copied at once; Hugging Face shards weights at 5 GB by default (`max_shard_size`), so
# the scratch space holds this many shards and a margin. A 100 GiB system node has about 44 GiB of
# allocatable ephemeral storage (GKE's node sizing page), so three Jobs fit on one node.
MIRROR_WORKERS: Final = 2
MIRROR_SCRATCH_GIB: Final = 12
# The Hub client's cache goes to the scratch volume, and Xet's chunk cache (up to 10 GB) is off.
MIRROR_HF_HOME: Final = "/scratch/hf"
# Retries cover Workload Identity grants that take a few minutes to reach the metadata server
# (backoff 10 s doubling: about ten minutes over six retries).
MIRROR_BACKOFF_LIMIT: Final = 6
# A 64 GB model at the slowest rate a Hub download runs here (tens of MB/s) takes under an hour.
MIRROR_DEADLINE_SECONDS: Final = 2 * 3600
# pulumi-kubernetes fails an `up` on a Failed Job and, without this, keeps the failed Job on the
# next one; with it, the next `up` replaces a Job that is not complete (pulumi-kubernetes #1575).
REPLACE_UNREADY_ANNOTATION: Final = "pulumi.com/replaceUnready"

DOCKER_HUB_HOST: Final = "docker.io"


def model_bucket_name(project: str | None, stack: str) -> str:
    """`<project>-llm-<stack>-models`: bucket names are global, the project id makes it ours.
    At most 63 characters (GCS); a long stack name is shortened with a hash to keep it unique."""
    name = f"{project or PROJECT_PLACEHOLDER}-llm-{_name_part(stack, 63)}-{BUCKET_SUFFIX}"
    if len(name) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: 63 - len(digest) - 1].rstrip('-')}-{digest}"
    return name


def _name_part(stack: str, limit: int) -> str:
    """The stack's name as a GCP id part: lowercase letters, digits and '-', at most `limit`
    characters, a hash ending it when shortened (two long stack names stay apart)."""
    part = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-") or "stack"
    if len(part) <= limit:
        return part
    digest = hashlib.sha256(stack.encode()).hexdigest()[:6]
    return f"{part[: limit - len(digest) - 1].rstrip('-')}-{digest}"


def image_repository_id(stack: str) -> str:
    return f"llm-{_name_part(stack, 40)}-dockerhub"


def image_via_registry(region: str, project: str | None, stack: str, image: str = RAY_LLM_IMAGE) -> str:
    """A Docker Hub image through the stack's remote repository: `<region>-docker.pkg.dev/<project>/
    <repo>/<path>:<tag>`; Docker Hub's own library images keep their `library/` path."""
    path = image.removeprefix(f"{DOCKER_HUB_HOST}/")
    if "/" not in path.split(":")[0]:
        path = f"library/{path}"
    return f"{region}-docker.pkg.dev/{project or PROJECT_PLACEHOLDER}/{image_repository_id(stack)}/{path}"


def google_account_id(stack: str, role: str) -> str:
    """Service account ids are 6-30 lowercase characters; the stack part is shortened, never the role."""
    return f"llm-{_name_part(stack, 30 - len('llm--') - len(role))}-{role}"


def workload_identity_member(workload_pool: str, namespace: str, ksa: str) -> str:
    """The principal a Kubernetes service account acts as: `<project>.svc.id.goog[<ns>/<ksa>]`."""
    return f"serviceAccount:{workload_pool}[{namespace}/{ksa}]"


def mirror_code_files() -> dict[str, str]:
    """The ConfigMap data that makes `serve.model_mirror` importable in the Job."""
    return module_files(serve.model_mirror)


def mirror_code_config_map_name(files: Mapping[str, str] | None = None) -> str:
    return content_name(MIRROR_CODE_PREFIX, mirror_code_files() if files is None else files)


def mirror_job_name(model: ModelEntry) -> str:
    """Named by (Hub repo, revision): a revision bump is a new Job; the same revision is the same Job."""
    digest = hashlib.sha256(f"{model.source}@{model.revision}".encode()).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9]+", "-", model.source.lower()).strip("-")[:40].rstrip("-")
    return f"mirror-{slug}-{digest}"


def mirror_job(
    model: ModelEntry,
    *,
    bucket: str,
    namespace: str,
    image: str,
    system_pool: NodePoolSpec,
    hf_secret: tuple[str, str],
    env_config_map: str,
) -> dict[str, Any]:
    """The Job that mirrors one Hub repo's revision, on the system pool, with the HF token."""
    secret_name, secret_key = hf_secret
    files = mirror_code_files()
    command = ["python", "-m", "serve.model_mirror", "--model-id", model.source, "--revision", model.revision]
    command += ["--bucket", bucket, "--workers", str(MIRROR_WORKERS)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": mirror_job_name(model),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/component": "model-mirror"},
            "annotations": {
                "llm-serving/hub-repo": model.source,
                "llm-serving/revision": model.revision,
                REPLACE_UNREADY_ANNOTATION: "true",
            },
        },
        "spec": {
            "backoffLimit": MIRROR_BACKOFF_LIMIT,
            "activeDeadlineSeconds": MIRROR_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/component": "model-mirror"}},
                "spec": {
                    "serviceAccountName": MIRROR_KSA,
                    "restartPolicy": "Never",
                    "nodeSelector": dict(system_pool.labels),
                    "containers": [
                        {
                            "name": "mirror",
                            "image": image,
                            "command": command,
                            "env": [
                                {
                                    "name": HF_TOKEN_ENV,
                                    "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key}},
                                },
                                {"name": "PYTHONPATH", "value": MIRROR_CODE_MOUNT_PATH},
                                {"name": "TMPDIR", "value": MIRROR_SCRATCH_PATH},
                                {"name": "HF_HOME", "value": MIRROR_HF_HOME},
                                {"name": "HF_XET_CHUNK_CACHE_SIZE_BYTES", "value": "0"},
                            ],
                            "envFrom": [{"configMapRef": {"name": env_config_map}}],
                            "resources": {
                                "requests": {
                                    "cpu": "1",
                                    "memory": "2Gi",
                                    "ephemeral-storage": f"{MIRROR_SCRATCH_GIB}Gi",
                                },
                                "limits": {"memory": "2Gi", "ephemeral-storage": f"{MIRROR_SCRATCH_GIB}Gi"},
                            },
                            "volumeMounts": [
                                {"name": "code", "mountPath": MIRROR_CODE_MOUNT_PATH, "readOnly": True},
                                {"name": "scratch", "mountPath": MIRROR_SCRATCH_PATH},
                            ],
                        }
                    ],
                    "volumes": [
                        code_volume("code", mirror_code_config_map_name(files), files),
                        {"name": "scratch", "emptyDir": {"sizeLimit": f"{MIRROR_SCRATCH_GIB}Gi"}},
                    ],
                },
            },
        },
    }


def mirrored_models(models: list[ModelEntry] | tuple[ModelEntry, ...]) -> list[ModelEntry]:
    """One model per (Hub repo, revision), in catalog order: each is mirrored once."""
    seen: dict[tuple[str, str], ModelEntry] = {}
    for model in models:
        seen.setdefault((model.source, model.revision), model)
    return list(seen.values())
