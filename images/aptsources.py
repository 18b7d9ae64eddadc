#!/usr/bin/env python3
"""Print the Debian mirrors this machine's apt is configured with, for one suite.

    aptsources.py SUITE      ->  lines "URI SUITE-OR-POCKET", e.g.
                                 http://deb.debian.org/debian bookworm
                                 http://deb.debian.org/debian bookworm-updates
                                 http://deb.debian.org/debian-security bookworm-security

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/*.list (one-line form) and
*.sources (deb822 form); keeps `deb` entries with component `main` whose suite is SUITE or
SUITE-<pocket>. The first line is the mirror for SUITE itself (what debootstrap needs).
scripts/build-images.sh uses it so that the image build talks to no other mirror.
Standard library only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

APT = Path("/etc/apt")


def one_line(text: str) -> Iterator[tuple[str, str, list[str]]]:
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=…]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 3:
            yield words[0], words[1], words[2:]


def deb822(text: str) -> Iterator[tuple[str, str, list[str]]]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri, suite, fields.get("components", "").split()


def entries() -> Iterator[tuple[str, str, list[str]]]:
    lists = [APT / "sources.list", *sorted((APT / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            yield from one_line(path.read_text())
    for path in sorted((APT / "sources.list.d").glob("*.sources")):
        yield from deb822(path.read_text())


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    suite = sys.argv[1]
    found = [
        (uri.rstrip("/"), s)
        for uri, s, comps in entries()
        if "main" in comps and (s == suite or s.startswith(suite + "-"))
    ]
    found.sort(key=lambda e: e[1] != suite)  # the suite itself first, pockets after
    if not found or found[0][1] != suite:
        print(f"aptsources: no apt source with suite {suite} and component main", file=sys.stderr)
        return 1
    seen = set()
    for uri, s in found:
        if (uri, s) not in seen:
            seen.add((uri, s))
            print(uri, s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
