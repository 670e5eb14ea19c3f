"""The store's embed function: words hashed into 64 buckets, normalised (offline, deterministic)."""

from __future__ import annotations

import hashlib
import math
import re

DIMS = 64


def embed(texts: list[str]) -> list[list[float]]:
    """One unit vector per text: a bag of its words."""
    vectors = []
    for text in texts:
        vector = [0.0] * DIMS
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMS] += 1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        vectors.append([x / norm for x in vector])
    return vectors
