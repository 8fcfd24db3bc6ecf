"""What a secret looks like, so that no message, report or log line ever prints one.

The Hugging Face token format is `hf_` followed by letters and digits (huggingface_hub writes
34 of them today); 20 or more is what the stack-file check, the policy pack and the redaction
below all treat as a token. Add a pattern here and every located message is redacted for it.
"""

from __future__ import annotations

import re
from typing import Final

HF_TOKEN_PATTERN: Final = re.compile(r"hf_[A-Za-z0-9]{20,}")
SECRET_PATTERNS: Final = (HF_TOKEN_PATTERN,)
REDACTED: Final = "<redacted token>"


def looks_like_secret(text: str) -> bool:
    return any(pattern.search(text) for pattern in SECRET_PATTERNS)


def redact(text: str) -> str:
    """`text` with every token-looking substring replaced by REDACTED."""
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text
