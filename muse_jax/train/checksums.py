"""Checksum manifests of checkpoint steps: what a step held when it was saved, to verify on restore.

After Orbax has committed step N (its temporary folder renamed to `checkpoints/N`), process 0
writes `checkpoints/N/checksums.json`: every file of the step (path relative to the step
folder, size in bytes, SHA-256). Restoring checks the files against it first, so a flipped,
truncated or missing file is found before any byte of it is used. A step without a manifest
(saved by an older version, or killed between Orbax's commit and the manifest) is not rejected
for that: it is restored and checked for finiteness like every other step.
"""

import hashlib
import json
import os

MANIFEST = "checksums.json"
_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def step_files(step_dir: str) -> list[str]:
    """Every file under `step_dir` except the manifest, as sorted relative paths."""
    found = []
    for root, _, names in os.walk(step_dir):
        found += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
    return sorted(f for f in found if f != MANIFEST)


def write_manifest(step_dir: str) -> None:
    """`step_dir/checksums.json` for the files there now (written to a temporary name, then renamed)."""
    files = {rel: {"bytes": os.path.getsize(os.path.join(step_dir, rel)),
                   "sha256": file_sha256(os.path.join(step_dir, rel))} for rel in step_files(step_dir)}
    path = os.path.join(step_dir, MANIFEST)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def has_manifest(step_dir: str) -> bool:
    return os.path.isfile(os.path.join(step_dir, MANIFEST))


def manifest_problem(step_dir: str) -> str | None:
    """What differs between `step_dir` and its manifest (the first file found: missing, of another
    size or content), or None when every listed file matches or there is no manifest."""
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            files = sorted(json.load(f)["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"its {MANIFEST} is damaged ({type(e).__name__})"
    for rel, expected in files:
        full = os.path.join(step_dir, rel)
        if not os.path.isfile(full):
            return f"{rel} is missing"
        if os.path.getsize(full) != expected["bytes"]:
            return f"{rel} has {os.path.getsize(full)} bytes, {expected['bytes']} were saved"
        if file_sha256(full) != expected["sha256"]:
            return f"{rel} does not match its saved checksum"
    return None
