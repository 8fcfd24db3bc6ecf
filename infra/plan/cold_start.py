"""The cold-start budget: how long a new replica takes from "the autoscaler wants it" to "vLLM
answers", per served model, phase by phase, today (the baseline) and with this design.

A cold start here is the worst ordinary case: no node of the model's tier is free, so a spot VM is
created for it. Five phases run one after the other:

    node     Ray's autoscaler asks KubeRay for a worker, the cluster autoscaler sees the pending pod
             and creates a spot VM, which boots and registers;
    driver   GKE installs the NVIDIA driver and the device plugin advertises the GPUs;
    image    the kubelet gets the Ray image and starts the container;
    weights  the replica's node gets the model's files onto its local disk;
    engine   the replica starts vLLM: imports, weights from local disk into the GPU, torch.compile,
             memory profiling, CUDA graph capture.

The baseline is what the first version did: the image pulled whole from Docker Hub, every replica
downloading its weights from Hugging Face. The design: the image through the stack's Artifact
Registry remote repository with GKE image streaming, the weights copied from the stack's regional
bucket (mirrored once by a Job) with Ray's parallel pyarrow copy, and vLLM's default loader.

The weights phase is a formula, not a per-model figure:

    seconds = weights MiB / min(source read MiB/s, destination disk write MiB/s)

where the disk's write rate follows Compute Engine's Persistent Disk model (a baseline plus a rate
per provisioned GiB, capped per VM) for the pool's boot disk type and size. Every other figure is a
named constant below with where it was read. Figures are estimates to plan with, not measurements
of this stack: `python -m infra.plan` prints them and docs/cold-start.md lists their sources.

Pure: no Pulumi, no cloud calls (tests/test_plan.py imports every module of infra.plan).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from infra.plan import ServingPlan
from infra.plan.node_pools import NodePoolSpec
from serve.catalog import ModelEntry
from serve.memory import GIB

READ_ON: Final = "2026-11-26"
MIB: Final = 2**20
MB: Final = 10**6

# The issue's target for the shipped 8B model on one L4: at most 5 minutes modelled.
TARGET_SECONDS: Final = 300.0

PhaseName = Literal["node", "driver", "image", "weights", "engine"]
PHASES: Final[tuple[PhaseName, ...]] = ("node", "driver", "image", "weights", "engine")

# --- where each figure was read (one string per source, cited by the phases) ---------------

SRC_RAY_AUTOSCALER: Final = (
    "Ray 2.60 ray/autoscaler/_private/constants.py AUTOSCALER_UPDATE_INTERVAL_S = 5 "
    f"(the installed package, read {READ_ON})"
)
SRC_CA_FAQ: Final = (
    "kubernetes/autoscaler cluster-autoscaler FAQ (text in kubernetes/autoscaler#465): CA scans for "
    "unschedulable pods every 10 s; a new GCE/GKE node takes about 1.5-2 min to boot and up to 30 s to "
    f"register (read {READ_ON})"
)
SRC_ISSUE_11: Final = (
    "GitHub issue #11 of this project (baseline estimates from GKE/vendor sources: spot VM 1-3 min, GPU "
    "driver 1-3 min, full Docker Hub pull of the ~10 GB ray-llm image 2-8 min, 16 GB of weights from "
    "Hugging Face 2-3 min on pd-balanced)"
)
SRC_DRIVER_MEASURED: Final = (
    "codalab/codalab-worksheets#4042 (GKE, COS, 2022): about 4 min from VM up to NVIDIA driver "
    f"installed, the pessimistic case (read {READ_ON})"
)
SRC_IMAGE_STREAMING: Final = (
    "GKE 'Use Image streaming to pull container images' "
    "https://cloud.google.com/kubernetes-engine/docs/how-to/image-streaming (Artifact Registry standard "
    "or remote repositories, COS containerd); a reported test of Google's deep-learning image "
    "(https://roastidio.us/topic/8750009, a mirrored blog post): container created in 20 s with image "
    f"streaming instead of 3 min 50 s (read {READ_ON})"
)
SRC_IMAGE_LAZY: Final = (
    "assumption, not measured: the engine's start reads about 4 GiB of the image (torch, CUDA 13 "
    "libraries, vLLM kernels), fetched on demand at one GCS stream's rate"
)
SRC_GCS_THROUGHPUT: Final = (
    "'High throughput file transfers with Google Cloud Storage' "
    "https://www.beginswithdata.com/2024/02/01/google-cloud-storage-max-throughput/ (about 200 MiB/s "
    "per stream, GiB/s with parallel streams); Ray 2.60 "
    "ray/llm/_internal/common/utils/cloud_filesystem/pyarrow_filesystem.py downloads with "
    "pyarrow.fs.copy_files(use_threads=True), one file per IO thread, pyarrow's default 8 IO threads "
    f"(pyarrow 26 io_thread_count()); Hugging Face shards weights at 5 GB (read {READ_ON})"
)
SRC_PD_PERFORMANCE: Final = (
    "Compute Engine 'Persistent Disk performance' "
    "https://cloud.google.com/compute/docs/disks/performance: pd-balanced 140 MiB/s baseline + "
    "0.28 MiB/s per GiB, pd-ssd 240 MiB/s + 0.48 MiB/s per GiB (reads and writes); only the page's "
    "Japanese rendering, without the table, could be read here: re-check the figures. Per-VM write "
    "cap from 'Optimize Persistent Disk performance' "
    "https://cloud.google.com/compute/docs/disks/optimizing-pd-performance (N1 example: 1,034 MB/s "
    f"at 8-15 vCPUs, 2,069 MB/s at 16+, with the network in use) (read {READ_ON})"
)
SRC_LOCAL_SSD: Final = (
    "GKE 'About local SSDs' https://cloud.google.com/kubernetes-engine/docs/concepts/local-ssd "
    "(--ephemeral-storage-local-ssd puts /var/lib/containerd and /var/lib/kubelet on local SSD); "
    "Compute Engine 'Add Local SSD disks' https://cloud.google.com/compute/docs/disks/add-local-ssd "
    "(A2 Ultra machine types come with Local SSD; G2 not in that list, its local SSD support is not "
    "verified here); 350 MiB/s write per 375 GiB NVMe disk from Compute Engine's Local SSD "
    f"performance table as remembered, not re-read here (read {READ_ON})"
)
SRC_HF_DOWNLOAD: Final = (
    "oobabooga/textgen#6143: huggingface_hub's default downloader tops out near 100 MB/s on a "
    "10 Gbit/s link (hf_transfer is faster; the ray-llm image's setting is not verified); consistent "
    f"with issue #11's 16 GB in 2-3 min (read {READ_ON})"
)
SRC_VLLM_LOAD: Final = (
    "Run:ai Model Streamer: Performance Benchmarks (run.ai blog, 2024-10-29): Llama-3-8B loads in "
    "48 s with vLLM's default safetensors loader, 14 s with the streamer (same storage); the copied "
    "files are assumed still in the page cache (the 8B model's 15 GiB fit the L4 worker's 26 GiB), "
    f"otherwise reads run at the disk's rate (read {READ_ON})"
)
SRC_VLLM_INIT: Final = (
    "vllm-project/vllm#20264 (torch.compile from cache 7.5 s, CUDA graph capture 17 s, engine init "
    "34 s, about 30 s more before the first response); kubernetes-sigs/"
    "gateway-api-inference-extension#550 (cold torch.compile 28.77 s for a 7B model); "
    "vllm-project/vllm#20098 (67 CUDA graphs, more than 10 s). Measured on larger GPUs and hosts "
    f"than an L4 on g2-standard-8: likely optimistic there (read {READ_ON})"
)
SRC_RUNAI_IMAGE: Final = (
    "infra/plan/model_store.py: the pinned rayproject/ray-llm image does not ship runai-model-streamer "
    "(ray-project/ray#52499); a derived image would enable load_format=runai_streamer"
)
SRC_FAST_NODES: Final = (
    "GKE 'About quicker workload startup with fast-starting nodes' "
    "https://cloud.google.com/kubernetes-engine/docs/concepts/fast-starting-nodes: up to 4x faster "
    "node startup for L4 (G2), Autopilot only, not with Spot VMs or local SSDs "
    f"(read {READ_ON})"
)

# --- node: spot VM provisioning (unchanged by this design) ----------------------------------

# Ray's autoscaler loop: how long until it asks KubeRay for the worker the replica needs.
RAY_AUTOSCALER_INTERVAL_S: Final = 5.0
# The cluster autoscaler's scan interval: how long a pending worker pod waits to be noticed.
CA_SCAN_INTERVAL_S: Final = 10.0
# A GCE VM's create and boot on GKE: the FAQ's "about 1.5-2 min", midpoint.
VM_BOOT_S: Final = 105.0
# The new node registering with the control plane and becoming Ready: the FAQ's "up to 30 s".
NODE_REGISTER_S: Final = 30.0

# --- driver: GKE-managed install, LATEST (unchanged by this design) --------------------------

# GKE's driver installer and the device plugin advertising nvidia.com/gpu: issue #11's 1-3 min,
# midpoint (codalab#4042 measured about 4 min in 2022: the pessimistic case).
DRIVER_INSTALL_S: Final = 120.0

# --- image ---------------------------------------------------------------------------------

# A full pull and unpack of the ~10 GB rayproject/ray-llm image from Docker Hub: issue #11's
# 2-8 min, midpoint (a reported test: 3 min 50 s for Google's deep-learning image).
DOCKER_HUB_FULL_PULL_S: Final = 300.0
# With image streaming, the container is created once the mount is ready: the measured 20 s.
STREAMED_CONTAINER_START_S: Final = 20.0
# What the engine's start reads from the image on demand (assumption, see SRC_IMAGE_LAZY).
IMAGE_READ_AT_START_GIB: Final = 4.0

# --- weights -------------------------------------------------------------------------------

# One GCS stream's read rate from a VM in the bucket's region.
GCS_STREAM_MIBPS: Final = 200.0
# pyarrow's default IO thread pool: Ray's copy reads this many files at once.
PYARROW_IO_THREADS: Final = 8
# Hugging Face's default shard size: a model has ceil(bytes / 5 GB) weight files.
HF_SHARD_BYTES: Final = 5 * 10**9
# huggingface_hub's default downloader, per replica, through Cloud NAT.
HF_DOWNLOAD_MIBPS: Final = 100 * MB / MIB
# Persistent Disk throughput: (baseline MiB/s, MiB/s per provisioned GiB), reads = writes.
PD_THROUGHPUT_MIBPS: Final = {"pd-balanced": (140.0, 0.28), "pd-ssd": (240.0, 0.48)}
# Per-VM Persistent Disk write cap by vCPUs (from this many vCPUs up), MB/s with the network in use
# (the N1 example; accelerator VMs have at least N1's egress bandwidth).
PD_WRITE_CAP_MBPS_BY_VCPUS: Final = ((1, 129), (2, 647), (8, 1034), (16, 2069))
# One 375 GiB NVMe local SSD's write rate; a machine's local SSDs stripe for ephemeral storage.
LOCAL_SSD_WRITE_MIBPS_PER_DISK: Final = 350.0
# The GPU pools' boot disk type (infra/components/cluster.py BOOT_DISK_TYPE; a test keeps them equal).
BOOT_DISK_TYPE: Final = "pd-balanced"

# --- engine --------------------------------------------------------------------------------

# Ray Serve replica and vLLM process start (imports, engine process, API): vllm#20264's ~30 s.
ENGINE_PROCESS_START_S: Final = 30.0
# vLLM's default safetensors loader: 48 s for Llama-3-8B's 14.96 GiB, per GiB.
VLLM_LOADER_S_PER_GIB: Final = 48.0 / 14.96
# The Run:ai streamer on the same storage: 14 s for the same model, per GiB.
RUNAI_STREAMER_S_PER_GIB: Final = 14.0 / 14.96
# torch.compile with no cache on the node (every new node): gateway-api-inference-extension#550.
TORCH_COMPILE_COLD_S: Final = 29.0
# CUDA graph capture of vLLM's default batch sizes: vllm#20264.
CUDA_GRAPH_CAPTURE_S: Final = 17.0
# Memory profiling and KV cache allocation: vllm#20264's engine init less compile and capture.
ENGINE_PROFILE_S: Final = 10.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Phase(_Frozen):
    name: PhaseName
    baseline_seconds: float
    design_seconds: float
    source: str
    what_changes: str


class ColdStart(_Frozen):
    model_id: str
    tier: str
    machine_type: str
    weights_gib: float
    phases: tuple[Phase, ...]

    @property
    def baseline_seconds(self) -> float:
        return sum(phase.baseline_seconds for phase in self.phases)

    @property
    def design_seconds(self) -> float:
        return sum(phase.design_seconds for phase in self.phases)

    def phase(self, name: PhaseName) -> Phase:
        return next(phase for phase in self.phases if phase.name == name)


class Design(_Frozen):
    """What the design does; the defaults are what this stack builds. The other values are the
    changes the report weighs (none of them is built, except a warm node where the stack already
    keeps spare nodes)."""

    boot_disk_type: Literal["pd-balanced", "pd-ssd"] = BOOT_DISK_TYPE
    # Node ephemeral storage (containerd, emptyDir) on the machine's local SSDs.
    local_ssd_disks: int = 0
    # A derived image with runai-model-streamer: vLLM streams gs:// into the GPU, no local copy.
    runai_streamer: bool = False
    # A node of the tier already up and free: no node, no driver. None: as the stack has it, a spare
    # node where the tier's `spareNodes` > 0 (infra/plan/spare_capacity.py); True or False: the
    # what-if of one kept (whatever the stack says) or of none (`spareNodes: 0`).
    warm_node: bool | None = None


SHIPPED: Final = Design()


# --- the formulas --------------------------------------------------------------------------


def pd_write_mibps(disk_type: str, size_gib: float, vcpus: int) -> float:
    """A Persistent Disk's sustained write rate on a VM: baseline + per-GiB rate, capped per VM."""
    baseline, per_gib = PD_THROUGHPUT_MIBPS[disk_type]
    cap_mb = max(cap for from_vcpus, cap in PD_WRITE_CAP_MBPS_BY_VCPUS if vcpus >= from_vcpus)
    return min(baseline + per_gib * size_gib, cap_mb * MB / MIB)


def local_disk_write_mibps(pool: NodePoolSpec, design: Design) -> float:
    """Where a node's container layers and scratch files land: local SSDs or the boot disk."""
    if design.local_ssd_disks > 0:
        return design.local_ssd_disks * LOCAL_SSD_WRITE_MIBPS_PER_DISK
    return pd_write_mibps(design.boot_disk_type, pool.boot_disk_gib, pool.machine.vcpus)


def weight_files(weights_gib: float) -> int:
    return max(1, math.ceil(weights_gib * GIB / HF_SHARD_BYTES))


def gcs_read_mibps(weights_gib: float) -> float:
    """Ray's copy from the bucket: one stream per file, at most pyarrow's IO threads at once."""
    return min(weight_files(weights_gib), PYARROW_IO_THREADS) * GCS_STREAM_MIBPS


def copy_seconds(weights_gib: float, source_mibps: float, disk_mibps: float) -> float:
    """Weights MiB over the slower of where they come from and the disk they are written to."""
    return weights_gib * GIB / MIB / min(source_mibps, disk_mibps)


def _image_in_artifact_registry(image: str) -> bool:
    """Image streaming serves only images in Artifact Registry (`<region>-docker.pkg.dev/...`)."""
    return image.split("/", 1)[0].endswith(".pkg.dev")


def spare_nodes(plan: ServingPlan, model: ModelEntry) -> int:
    """The spare nodes (`spareNodes`) the model's tier keeps free in the plan."""
    return plan.spare_nodes.get(model.tier, 0)


def _warm_node(plan: ServingPlan, model: ModelEntry, design: Design) -> str | None:
    """Why a free node of the tier is waiting for the replica, or None when one must be created."""
    if design.warm_node is None:
        return "a spare node of the tier (spareNodes): none" if spare_nodes(plan, model) > 0 else None
    return "a node kept warm: none" if design.warm_node else None


def _node(warm: str | None) -> Phase:
    baseline = RAY_AUTOSCALER_INTERVAL_S + CA_SCAN_INTERVAL_S + VM_BOOT_S + NODE_REGISTER_S
    return Phase(
        name="node",
        baseline_seconds=baseline,
        design_seconds=0.0 if warm else baseline,
        source=f"{SRC_RAY_AUTOSCALER}; {SRC_CA_FAQ}; {SRC_ISSUE_11}",
        what_changes=warm
        or "unchanged: a spot VM is created, booted and registered (fast-starting nodes are "
        "Autopilot-only and not for spot)",
    )


def _driver(warm: str | None) -> Phase:
    return Phase(
        name="driver",
        baseline_seconds=DRIVER_INSTALL_S,
        design_seconds=0.0 if warm else DRIVER_INSTALL_S,
        source=f"{SRC_ISSUE_11}; {SRC_DRIVER_MEASURED}",
        what_changes=warm or "unchanged: GKE-managed install (gpu_driver_version LATEST, R580 for CUDA 13)",
    )


def _image(plan: ServingPlan) -> Phase:
    if not _image_in_artifact_registry(plan.image):
        return Phase(
            name="image",
            baseline_seconds=DOCKER_HUB_FULL_PULL_S,
            design_seconds=DOCKER_HUB_FULL_PULL_S,
            source=SRC_ISSUE_11,
            what_changes="unchanged: the image is not in Artifact Registry, so it is not streamed",
        )
    lazy = IMAGE_READ_AT_START_GIB * GIB / MIB / GCS_STREAM_MIBPS
    return Phase(
        name="image",
        baseline_seconds=DOCKER_HUB_FULL_PULL_S,
        design_seconds=STREAMED_CONTAINER_START_S + lazy,
        source=f"{SRC_ISSUE_11}; {SRC_IMAGE_STREAMING}; {SRC_IMAGE_LAZY}",
        what_changes=(
            "pulled through the stack's Artifact Registry remote repository with image streaming: the "
            f"container starts in {STREAMED_CONTAINER_START_S:.0f} s and the engine's start reads "
            f"{IMAGE_READ_AT_START_GIB:.0f} GiB on demand ({lazy:.0f} s); the mirror Job runs the same "
            "image first, so the remote repository holds it before a GPU node asks"
        ),
    )


def _weights(model: ModelEntry, pool: NodePoolSpec, design: Design) -> Phase:
    weights = model.memory().weights_gib
    # Today's pools: the weights go to the boot disk of the shipped type and size.
    baseline_disk = pd_write_mibps(BOOT_DISK_TYPE, pool.boot_disk_gib, pool.machine.vcpus)
    baseline = copy_seconds(weights, HF_DOWNLOAD_MIBPS, baseline_disk)
    if design.runai_streamer:
        return Phase(
            name="weights",
            baseline_seconds=baseline,
            design_seconds=0.0,
            source=f"{SRC_HF_DOWNLOAD}; {SRC_PD_PERFORMANCE}; {SRC_RUNAI_IMAGE}",
            what_changes="no local copy: vLLM's Run:ai streamer reads gs:// into the GPU (engine phase)",
        )
    disk = local_disk_write_mibps(pool, design)
    gcs = gcs_read_mibps(weights)
    where = (
        f"{design.local_ssd_disks} local SSD(s)"
        if design.local_ssd_disks
        else f"{pool.boot_disk_gib} GiB {design.boot_disk_type}"
    )
    return Phase(
        name="weights",
        baseline_seconds=baseline,
        design_seconds=copy_seconds(weights, gcs, disk),
        source=f"{SRC_HF_DOWNLOAD}; {SRC_GCS_THROUGHPUT}; {SRC_PD_PERFORMANCE}"
        + (f"; {SRC_LOCAL_SSD}" if design.local_ssd_disks else ""),
        what_changes=(
            f"{weights:.1f} GiB from the regional bucket ({weight_files(weights)} files, "
            f"{gcs:.0f} MiB/s) to {where} ({disk:.0f} MiB/s) instead of from Hugging Face "
            f"({HF_DOWNLOAD_MIBPS:.0f} MiB/s) to {pool.boot_disk_gib} GiB {BOOT_DISK_TYPE} "
            f"({baseline_disk:.0f} MiB/s)"
        ),
    )


def _engine(model: ModelEntry, design: Design) -> Phase:
    # Tensor-parallel ranks each load their share of every tensor, at the same time.
    share = model.memory().weights_gib / model.tensor_parallel_size
    eager = model.engine.enforce_eager is True
    warmup = ENGINE_PROFILE_S + (0.0 if eager else TORCH_COMPILE_COLD_S + CUDA_GRAPH_CAPTURE_S)
    baseline = ENGINE_PROCESS_START_S + share * VLLM_LOADER_S_PER_GIB + warmup
    loader = RUNAI_STREAMER_S_PER_GIB if design.runai_streamer else VLLM_LOADER_S_PER_GIB
    return Phase(
        name="engine",
        baseline_seconds=baseline,
        design_seconds=ENGINE_PROCESS_START_S + share * loader + warmup,
        source=f"{SRC_VLLM_LOAD}; {SRC_VLLM_INIT}"
        + (f"; {SRC_RUNAI_IMAGE}" if design.runai_streamer else ""),
        what_changes=(
            f"Run:ai streamer from gs:// ({share * loader:.0f} s for the weights)"
            if design.runai_streamer
            else "unchanged: vLLM's default loader from local disk, then compile, profile and capture"
            + (" (enforce_eager: no compile or capture)" if eager else "")
        ),
    )


def _pool_for(plan: ServingPlan, model: ModelEntry) -> NodePoolSpec:
    return next(pool for pool in plan.gpu_pools if pool.tier == model.tier)


def model_cold_start(plan: ServingPlan, model: ModelEntry, design: Design = SHIPPED) -> ColdStart:
    """A spare node saves the node and driver phases only. The image phase stays: the placeholder's
    `sleep` read a few files of the image, not the ~4 GiB vLLM's start reads, so the design's
    streamed-image figure still holds; weights and engine are per replica."""
    pool = _pool_for(plan, model)
    warm = _warm_node(plan, model, design)
    return ColdStart(
        model_id=model.id,
        tier=model.tier.value,
        machine_type=pool.machine.machine_type,
        weights_gib=model.memory().weights_gib,
        phases=(
            _node(warm),
            _driver(warm),
            _image(plan),
            _weights(model, pool, design),
            _engine(model, design),
        ),
    )


def cold_start_budget(plan: ServingPlan, design: Design = SHIPPED) -> tuple[ColdStart, ...]:
    """Every served model's cold start, baseline beside the design, in catalog order."""
    return tuple(model_cold_start(plan, model, design) for model in plan.served)


def max_modelled_cold_start_seconds(plan: ServingPlan, design: Design = SHIPPED) -> float:
    """The slowest served model's modelled cold start with the design: what a request that waits
    out a cold start may wait."""
    return max(cold.design_seconds for cold in cold_start_budget(plan, design))


def slower_than(seconds: float, budget: Iterable[ColdStart]) -> tuple[ColdStart, ...]:
    """The cold starts whose design total exceeds `seconds` (a timeout, a target): empty when every
    modelled cold start fits. Independent of any constant, so a caller checks its own, e.g.
    `assert not slower_than(REQUEST_TIMEOUT_SECONDS, cold_start_budget(plan))`."""
    return tuple(cold for cold in budget if cold.design_seconds > seconds)


# --- the rendered forms --------------------------------------------------------------------


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def markdown_table(plan: ServingPlan, design: Design = SHIPPED) -> str:
    """The budget as a Markdown table (baseline → design seconds per phase), as docs/cold-start.md
    holds it for prod."""
    lines = [
        "| model | tier (machine) | weights GiB | " + " | ".join(PHASES) + " | total |",
        "|---|---|---:|" + "---:|" * len(PHASES) + "---:|",
    ]
    for cold in cold_start_budget(plan, design):
        cells = [f"{p.baseline_seconds:.0f} → {p.design_seconds:.0f}" for p in cold.phases]
        total = f"{_minutes(cold.baseline_seconds)} → {_minutes(cold.design_seconds)}"
        lines.append(
            f"| {cold.model_id} | {cold.tier} ({cold.machine_type}) | {cold.weights_gib:.1f} | "
            + " | ".join(cells)
            + f" | {total} |"
        )
    return "\n".join(lines) + "\n"


def all_sources() -> tuple[str, ...]:
    """Every source the figures cite, once each, in the order the phases use them."""
    return (
        SRC_RAY_AUTOSCALER,
        SRC_CA_FAQ,
        SRC_ISSUE_11,
        SRC_DRIVER_MEASURED,
        SRC_IMAGE_STREAMING,
        SRC_IMAGE_LAZY,
        SRC_GCS_THROUGHPUT,
        SRC_PD_PERFORMANCE,
        SRC_LOCAL_SSD,
        SRC_HF_DOWNLOAD,
        SRC_VLLM_LOAD,
        SRC_VLLM_INIT,
        SRC_RUNAI_IMAGE,
        SRC_FAST_NODES,
    )


# The single changes weighed against the target: label, design. The warm node is built where the
# stack keeps a spare node (`spareNodes`); `markdown_what_ifs` then says so, and weighs its removal.
WARM_NODE_LABEL: Final = "one warm node of the tier (no node, no driver)"
NO_SPARE_NODE_LABEL: Final = "no spare node (spareNodes: 0): a node is created"
WHAT_IFS: Final = (
    ("pd-ssd boot disk on the GPU pools", Design(boot_disk_type="pd-ssd")),
    ("one local SSD as node ephemeral storage", Design(local_ssd_disks=1)),
    ("Run:ai streamer in a derived image", Design(runai_streamer=True)),
    (WARM_NODE_LABEL, Design(warm_node=True)),
)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def markdown_what_ifs(plan: ServingPlan, model_id: str, target: float = TARGET_SECONDS) -> str:
    """What each single change in WHAT_IFS would make one model's modelled cold start."""
    model = next(m for m in plan.served if m.id == model_id)
    shipped = model_cold_start(plan, model).design_seconds
    spare = spare_nodes(plan, model)
    design_label = f"none (the design, with spareNodes: {spare})" if spare else "none (the design)"
    lines = [
        f"| change ({model_id}) | modelled total | vs the design | at most {target:.0f} s |",
        "|---|---:|---:|---|",
        f"| {design_label} | {_minutes(shipped)} | 0 s | {_yes(shipped <= target)} |",
    ]
    rows = [
        (f"{label}: shipped, spareNodes: {spare}" if spare and design.warm_node else label, design)
        for label, design in WHAT_IFS
    ]
    if spare:
        rows.append((NO_SPARE_NODE_LABEL, Design(warm_node=False)))
    for label, design in rows:
        total = model_cold_start(plan, model, design).design_seconds
        lines.append(f"| {label} | {_minutes(total)} | {total - shipped:+.0f} s | {_yes(total <= target)} |")
    return "\n".join(lines) + "\n"


def markdown_sources() -> str:
    return "".join(f"- {source}\n" for source in all_sources())
