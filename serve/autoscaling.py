"""Per-stack replica autoscaling: the Serve-side half of what a stack may change."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictInt

from configcheck.models import CamelStrict, not_below

MAX_REPLICAS_BOUND = 64


class ReplicaAutoscaling(CamelStrict):
    """Ray Serve autoscaling applied to every model's deployment in a stack."""

    min_replicas: Annotated[
        StrictInt,
        Field(ge=0, le=MAX_REPLICAS_BOUND, description="Warm replicas per model; 0 scales to zero."),
    ]
    max_replicas: Annotated[
        StrictInt, Field(ge=1, le=MAX_REPLICAS_BOUND, description="Replicas per model at most.")
    ]
    target_ongoing_requests: Annotated[
        float, Field(gt=0, le=1024, description="In-flight requests per replica Serve scales towards.")
    ]
    max_ongoing_requests: Annotated[
        StrictInt, Field(ge=1, le=4096, description="In-flight requests a replica accepts before queueing.")
    ]
    upscale_delay_seconds: Annotated[
        float, Field(ge=0, le=3600, description="How long demand must stay high before adding a replica.")
    ]
    downscale_delay_seconds: Annotated[
        float, Field(ge=0, le=86400, description="How long demand must stay low before removing one.")
    ]

    _replicas_ordered = not_below("max_replicas", "min_replicas", fix="make minReplicas <= maxReplicas")
    _target_reachable = not_below(
        "max_ongoing_requests", "target_ongoing_requests", fix="a replica could never reach its target"
    )

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
