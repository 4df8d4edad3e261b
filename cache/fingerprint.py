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
