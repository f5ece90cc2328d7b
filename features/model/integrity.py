"""What training wrote into a model bundle, recorded and checked before any parser reads a byte.

Training writes ``manifest.json`` into the bundle folder (``write_manifest``): the size and SHA-256
of every other file. The SHA-256 of the manifest itself is the bundle's *digest*; training stores
it as a tag of the run and of each registered model version (``BUNDLE_DIGEST_TAG``), so the
registry vouches for the manifest and the manifest for every file. ``verify_bundle_dir`` checks a
downloaded folder against a digest using sizes and hashes only; a cut, changed, missing or extra
file is a ``BundleIntegrityError`` naming the file, raised before LightGBM or the JSON reader sees
it (LightGBM crashes the process on a truncated booster file rather than raising).

Pure Python, no MLflow: serving and training read the tag at their edges and call this module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# The manifest's file name inside the bundle folder, and the tag holding its SHA-256.
MANIFEST_NAME = "manifest.json"
BUNDLE_DIGEST_TAG = "dealrisk.bundle.sha256"
MANIFEST_FORMAT = 1
# Digest prefixes shown in messages: enough to tell two files apart at a glance.
SHOWN_HEX = 12
_CHUNK = 1 << 20


class BundleError(RuntimeError):
    """A model bundle could not be read."""


class BundleIntegrityError(BundleError):
    """A bundle folder is not what training wrote (or training recorded nothing to check it against)."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(folder: Path) -> list[str]:
    """The bundle's files other than the manifest, as sorted POSIX paths relative to ``folder``."""
    folder = Path(folder)
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST_NAME
    )


def build_manifest(folder: Path) -> dict:
    """The manifest of ``folder``: each file's size in bytes and SHA-256."""
    folder = Path(folder)
    return {
        "format": MANIFEST_FORMAT,
        "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
                  for name in bundle_files(folder)},
    }


def write_manifest(folder: Path) -> str:
    """Write ``manifest.json`` for the files of ``folder``; return the bundle's digest (its SHA-256)."""
    path = Path(folder) / MANIFEST_NAME
    path.write_bytes(json.dumps(build_manifest(folder), indent=2, sort_keys=True).encode("utf-8"))
    return file_sha256(path)


def bundle_digest(folder: Path) -> str:
    """The digest of a bundle folder written by ``write_manifest``: the SHA-256 of its manifest."""
    return file_sha256(Path(folder) / MANIFEST_NAME)


def verify_bundle_dir(folder: Path, digest: str | None, where: str = "") -> None:
    """Check every file of ``folder`` against the manifest whose SHA-256 is ``digest``.

    Reads sizes first and hashes only files of the recorded size, so a cut file costs no hashing.
    ``where`` names the bundle in messages (e.g. ``run 3f2a... (deal-win)``).

    Raises:
        BundleIntegrityError: ``digest`` is missing or empty (a bundle trained before manifests were
            recorded), the manifest is missing or is not the recorded one, or any file is missing,
            unknown to the manifest, of another size or of another SHA-256; the message names each
            such file with the expected and actual size or digest prefix, on one line.
    """
    folder = Path(folder)
    label = f"model bundle {where}".rstrip() if where else f"model bundle in {folder}"
    if not digest:
        raise BundleIntegrityError(
            f"{label} has no recorded digest (tag {BUNDLE_DIGEST_TAG}): it was trained before dealrisk recorded "
            "the SHA-256 of every bundle file, so its files cannot be checked before they are parsed; "
            "retrain and promote it (dealrisk train --data EXPORT --promote)"
        )
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleIntegrityError(f"{label}: {MANIFEST_NAME} is missing (training recorded digest {_short(digest)})")
    actual = file_sha256(manifest_path)
    if actual != digest:
        raise BundleIntegrityError(
            f"{label}: {MANIFEST_NAME} is not the one training recorded "
            f"(sha256 {_short(actual)}, recorded {_short(digest)}): the bundle was changed after training"
        )
    recorded = _recorded_files(json.loads(manifest_path.read_bytes()), label)
    problems = [f"{name} is missing" for name in sorted(set(recorded) - set(bundle_files(folder)))]
    problems += [f"{name} is not in {MANIFEST_NAME} (an extra file)" for name in bundle_files(folder) if name not in recorded]
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        if size != expected["bytes"]:
            problems.append(f"{name} is {size:,} bytes, training wrote {expected['bytes']:,}")
            continue
        sha = file_sha256(path)
        if sha != expected["sha256"]:
            problems.append(f"{name} has sha256 {_short(sha)}, training wrote {_short(expected['sha256'])}")
    if problems:
        raise BundleIntegrityError(f"{label} is not what training wrote: " + "; ".join(problems))


def _recorded_files(manifest: object, label: str) -> dict[str, dict]:
    """The manifest's ``files`` mapping, checked for shape (a vouched manifest of another format is refused)."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict)
            or not all(isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
                       for v in files.values())):
        raise BundleIntegrityError(f"{label}: {MANIFEST_NAME} is not a format-{MANIFEST_FORMAT} manifest "
                                   "of file sizes and SHA-256 digests")
    return files


def _short(digest: str) -> str:
    return f"{digest[:SHOWN_HEX]}..."
