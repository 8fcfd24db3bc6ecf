"""The one place every Ray version fact lives, with where each was read (2026-11-26).

The `ray[serve]` pin in pyproject.toml must equal RAY_VERSION; tests/test_versions.py checks
the installed Ray, the image tag, the RayService's `rayVersion` and the GPU driver the pools
install against these.
"""

from typing import Final

from serve.openai_app import IMPORT_PATH

RAY_VERSION: Final = "2.60.0"

# Ray's LLM image for this release is built for Python 3.12 and CUDA 13.0 only:
# ray-project/ray docker/ray-llm/Dockerfile ("ray-llm supports Python 3.12 only", CUDA_CODE
# cu130), the retirement of the cu128/py311 images (ray-project/ray#62458, May 2026), and the
# Ray 2.60.0 wheel's `llm` extra pinning CUDA 13 builds (vllm 0.29.0, nixl-cu13; METADATA of
# the installed ray-2.60.0.dist-info). The tag family is <ray>-<python>-<cuda>. Docker Hub
# itself cannot be reached from where this was written: `docker manifest inspect` the tag
# before a first deploy (README, "What is verified where").
RAY_LLM_IMAGE_PYTHON: Final = "3.12"
RAY_LLM_IMAGE_CUDA: Final = "13.0"
RAY_PYTHON_TAG: Final = "py" + RAY_LLM_IMAGE_PYTHON.replace(".", "")
RAY_CUDA_TAG: Final = "cu" + RAY_LLM_IMAGE_CUDA.replace(".", "")
RAY_LLM_IMAGE: Final = f"rayproject/ray-llm:{RAY_VERSION}-{RAY_PYTHON_TAG}-{RAY_CUDA_TAG}"

# The oldest Linux driver each CUDA release runs on (NVIDIA CUDA Toolkit release notes, table 3,
# https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/): 13.x needs the R580 branch even
# under minor-version compatibility.
MIN_DRIVER_FOR_CUDA: Final = {"12.8": "570.26", "13.0": "580.65.06"}

# The application builder the cluster and the local run import: Ray Serve LLM's multi-model
# OpenAI app behind API keys (serve/openai_app.py).
OPENAI_APP_IMPORT_PATH: Final = IMPORT_PATH
