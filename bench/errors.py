"""User-facing errors: one line that names what to fix. The CLI prints them and exits with 2."""

import difflib


class BenchError(Exception):
    """A failure the user caused and can fix; its message says how."""


def quote(text: str, limit: int = 60) -> str:
    """repr(text) for a one-line message (control characters escaped), cut after `limit` characters:
    a 5,000-character argument must not fill the terminal."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def plain(text: str, limit: int = 80) -> str:
    """text as typed, for echoing an argument unquoted in a one-line message: control characters
    (a newline would break the one line) escaped, cut after `limit` characters."""
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(text):,} characters)"


def unknown(kind: str, name: str, known: list[str]) -> BenchError:
    """`unknown dataset 'yaho'; did you mean 'yahoo'? (known: ...)`"""
    close = difflib.get_close_matches(name[:200], known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return BenchError(f"unknown {kind} {quote(name)}{hint} (known: {', '.join(sorted(known))})")
