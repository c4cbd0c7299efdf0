"""User-facing errors: one line that names what to fix. The CLI prints them and exits with 2."""

import difflib


class BenchError(Exception):
    """A failure the user caused and can fix; its message says how."""


def unknown(kind: str, name: str, known: list[str]) -> BenchError:
    """`unknown dataset 'yaho'; did you mean 'yahoo'? (known: ...)`"""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return BenchError(f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})")
