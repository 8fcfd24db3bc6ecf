"""Where the repository's files are: the one definition every module and test uses."""

from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
CATALOG_FILE_NAME: Final = "model_catalog.yaml"
# Generated artefacts (the tiny local model) live here; .gitignore lists it.
CACHE_DIR: Final = REPO_ROOT / ".cache"
