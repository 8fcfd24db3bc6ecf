"""Node label and taint keys the program writes on GKE pools and the policy pack reads back.

No imports: the policy pack loads this without the program's modules (like resource_types).
"""

from typing import Final

TIER_LABEL: Final = "llm-serving/tier"
POOL_LABEL: Final = "llm-serving/pool"
# On a fallback pool: the `llm-serving/pool` label of the spot pool it backs. The policy pack
# reads it to accept an on-demand GPU pool only behind a spot pool of the same stack.
FALLBACK_FOR_LABEL: Final = "llm-serving/fallback-for"
# GKE's label and taint key for custom compute classes: a pod selects a class by nodeSelector on
# it, and a manually created pool joins a class by carrying it as node label and NoSchedule taint.
# Sources (read 2026-11-27): the example vszal/gke-custom-compute-class-examples
# static-node-pools/create-node-pools.sh (`--node-labels=cloud.google.com/compute-class=<class>
# --node-taints=cloud.google.com/compute-class=<class>:NoSchedule`), the same shape in public GKE
# GPU samples, and Google's best-practice page, which shows `nodepools` priorities naming manual
# pools (https://cloud.google.com/kubernetes-engine/docs/best-practices/computeclasses). Google's
# own paragraph on manual pools (how-to/node-attributes-compute-classes) was not readable here:
# README, "On-demand fallback", lists this among what only a real cluster shows. GKE's API
# updates an existing pool's labels and taints in place (how-to/update-existing-nodepools).
COMPUTE_CLASS_KEY: Final = "cloud.google.com/compute-class"
