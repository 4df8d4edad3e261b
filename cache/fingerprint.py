"""The cache key: a hash of everything that changes the features, and nothing that does not."""
from __future__ import annotations

import hashlib
import json

# Bump when the store layout changes; readers refuse stores from a newer schema.
SCHEMA_VERSION = 1


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(canonical_json({"schema_version": SCHEMA_VERSION, **inputs}).encode()).hexdigest()


# What a store holds beyond its features' definition: two stores that differ only here hold features of one
# kind (a head trained on one can be scored on the other).
HOLDINGS = ("views",)


def features_fingerprint(inputs: dict) -> str:
    """The fingerprint of what the features are (model, prompt, taps, preprocessing ...), without what the
    store holds of them (augmented views): the key heads, training stores and test stores must share."""
    return fingerprint({k: v for k, v in inputs.items() if k not in HOLDINGS})
