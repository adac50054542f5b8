"""`python -m stream_reco.schemas [NAME]`: print one schema, or list the schemas and topics."""

from __future__ import annotations

import sys

from stream_reco.schemas import NAMES, TOPICS, UnknownSchema, text


def main(argv: list[str]) -> int:
    if not argv:
        for name in NAMES:
            print(f"{name:<12} {TOPICS[name]}")
        print("\nprint one with: python -m stream_reco.schemas NAME", file=sys.stderr)
        return 0
    try:
        sys.stdout.write(text(argv[0]))
    except UnknownSchema as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
