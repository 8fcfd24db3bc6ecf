"""The one place every Ray version fact lives.

The `ray[serve]` pin in pyproject.toml must equal RAY_VERSION; tests/test_versions.py
checks the installed Ray, the image tag and the RayService's `rayVersion` against it.
"""

RAY_VERSION = "2.60.0"
RAY_PYTHON_TAG = "py311"
RAY_CUDA_TAG = "cu128"

# Ray's LLM image bundles vLLM built for CUDA; the tag family is <ray>-<python>-<cuda>.
RAY_LLM_IMAGE = f"rayproject/ray-llm:{RAY_VERSION}-{RAY_PYTHON_TAG}-{RAY_CUDA_TAG}"

# Ray Serve LLM's own application builder: the cluster and the local run import the same one.
OPENAI_APP_IMPORT_PATH = "ray.serve.llm:build_openai_app"
