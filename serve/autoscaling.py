"""Per-stack replica autoscaling: the Serve-side half of what a stack may change."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

MAX_REPLICAS_BOUND = 64


class CamelStrict(BaseModel):
    """Pulumi config keys are camelCase; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class ReplicaAutoscaling(CamelStrict):
    """Ray Serve autoscaling applied to every model's deployment in a stack."""

    min_replicas: Annotated[StrictInt, Field(ge=0, le=MAX_REPLICAS_BOUND)]
    max_replicas: Annotated[StrictInt, Field(ge=1, le=MAX_REPLICAS_BOUND)]
    target_ongoing_requests: Annotated[float, Field(gt=0, le=1024)]
    max_ongoing_requests: Annotated[StrictInt, Field(ge=1, le=4096)]
    upscale_delay_seconds: Annotated[float, Field(ge=0, le=3600)]
    downscale_delay_seconds: Annotated[float, Field(ge=0, le=86400)]

    # Field validators on the second key of each pair, so the error names that key and its line
    # (a model validator could only point at the whole block).
    @field_validator("max_replicas")
    @classmethod
    def _replicas_ordered(cls, max_replicas: int, info: ValidationInfo) -> int:
        min_replicas = info.data.get("min_replicas")
        if min_replicas is not None and min_replicas > max_replicas:
            raise ValueError(
                f"maxReplicas {max_replicas} is below minReplicas {min_replicas}; "
                "make minReplicas <= maxReplicas"
            )
        return max_replicas

    @field_validator("max_ongoing_requests")
    @classmethod
    def _target_reachable(cls, max_ongoing: int, info: ValidationInfo) -> int:
        target = info.data.get("target_ongoing_requests")
        if target is not None and target > max_ongoing:
            raise ValueError(
                f"maxOngoingRequests {max_ongoing} is below targetOngoingRequests {target:g}; "
                "a replica could never reach its target"
            )
        return max_ongoing

    def serve_deployment_config(self) -> dict[str, Any]:
        """Ray Serve deployment options (`deployment_config` of an LLM config)."""
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_seconds,
                "downscale_delay_s": self.downscale_delay_seconds,
            },
            "max_ongoing_requests": self.max_ongoing_requests,
        }
