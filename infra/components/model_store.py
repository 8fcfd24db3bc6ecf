"""Where the pods' bytes come from on GCP: the stack's model bucket, the Google service accounts
that read and write it (Workload Identity), and the Artifact Registry remote repository the Ray
image is pulled through (image streaming needs Artifact Registry). infra/plan/model_store.py
says why each exists."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_gcp as gcp

from infra.plan.model_store import (
    MIRROR_KSA,
    RAY_KSA,
    READER_ROLE,
    WORKLOAD_IDENTITY_ROLE,
    WRITER_ROLE,
    google_account_id,
    image_repository_id,
    workload_identity_member,
)

# A bucket that outlives nothing: `pulumi destroy` deletes it with every mirrored model in it
# (weights are a copy of the Hub's; the next `up` mirrors them again).
FORCE_DESTROY: Final = True


def _member(workload_pool: str, *, namespace: str, ksa: str) -> str:
    return workload_identity_member(workload_pool, namespace, ksa)


@dataclass(frozen=True)
class ModelStoreArgs:
    stack: str
    region: str
    bucket_name: str
    """`infra.plan.model_store.model_bucket_name`: the LLM configs name it too."""
    namespace: str
    """The namespace of the Kubernetes service accounts the Google accounts trust."""
    workload_pool: pulumi.Input[str]
    """`<project>.svc.id.goog`."""
    cluster: pulumi.Resource
    """The cluster whose creation makes the workload pool exist: IAM refuses a binding to a pool
    that does not ("Identity Pool does not exist", terraform-google-kubernetes-engine#916)."""


class ModelStore(pulumi.ComponentResource):
    """The model bucket, its reader (Ray pods) and writer (mirror Jobs), and the image repository."""

    def __init__(self, name: str, args: ModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:infra:ModelStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            name=args.bucket_name,
            # In the cluster's region: no inter-region egress, and the replicas' reads stay close.
            location=args.region.upper(),
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            force_destroy=FORCE_DESTROY,
            labels={"app": "llm-serving", "stack": args.stack},
            opts=child,
        )
        self.accounts: dict[str, gcp.serviceaccount.Account] = {}
        self.bucket_roles: list[gcp.storage.BucketIAMMember] = []
        self.workload_identity: list[gcp.serviceaccount.IAMMember] = []
        for role_name, ksa, role in (
            ("models-read", RAY_KSA, READER_ROLE),
            ("models-write", MIRROR_KSA, WRITER_ROLE),
        ):
            account = gcp.serviceaccount.Account(
                f"{name}-{role_name}",
                account_id=google_account_id(args.stack, role_name),
                display_name=f"llm-serving {args.stack}: {ksa} pods, {role} on the model bucket",
                opts=child,
            )
            self.accounts[ksa] = account
            self.bucket_roles.append(
                gcp.storage.BucketIAMMember(
                    f"{name}-{role_name}-bucket",
                    bucket=self.bucket.name,
                    role=role,
                    member=account.member,
                    opts=child,
                )
            )
            self.workload_identity.append(
                gcp.serviceaccount.IAMMember(
                    f"{name}-{role_name}-wi",
                    service_account_id=account.name,
                    role=WORKLOAD_IDENTITY_ROLE,
                    member=pulumi.Output.from_input(args.workload_pool).apply(
                        functools.partial(_member, namespace=args.namespace, ksa=ksa)
                    ),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[args.cluster]),
                )
            )
        self.image_repository = gcp.artifactregistry.Repository(
            f"{name}-dockerhub",
            location=args.region,
            repository_id=image_repository_id(args.stack),
            format="DOCKER",
            mode="REMOTE_REPOSITORY",
            description="Docker Hub through Artifact Registry: GKE image streaming for the Ray image",
            remote_repository_config=gcp.artifactregistry.RepositoryRemoteRepositoryConfigArgs(
                description="Docker Hub",
                docker_repository=gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryArgs(
                    public_repository="DOCKER_HUB"
                ),
            ),
            labels={"app": "llm-serving", "stack": args.stack},
            opts=child,
        )
        self.register_outputs({"bucket": self.bucket.name, "image_repository": self.image_repository.name})

    @property
    def grants(self) -> list[pulumi.Resource]:
        """What a pod needs before it reads or writes the bucket."""
        return [*self.bucket_roles, *self.workload_identity]
