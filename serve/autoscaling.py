"""Per-stack replica autoscaling: the Serve-side half of what a stack may change."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
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

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas {self.min_replicas} is above maxReplicas {self.max_replicas}; "
                "make minReplicas <= maxReplicas"
            )
        if self.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError(
                f"targetOngoingRequests {self.target_ongoing_requests:g} is above maxOngoingRequests "
                f"{self.max_ongoing_requests}; a replica could never reach its target"
            )
        return self

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
