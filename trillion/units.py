"""Human-readable numbers for reports (`trillion params`, `trillion kv`, ...). Imports no torch."""

from __future__ import annotations


def format_bytes(n: float, digits: int = 2) -> str:
    """Decimal units, as docs/params.md: GB = 1e9 bytes, MB = 1e6, KB = 1e3."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:,.{digits}f} {unit}"
    return f"{int(n)} B"


def format_count(n: int, digits: int = 3) -> str:
    """1573031... -> '1573.031B'; millions as 'M', thousands as 'K'."""
    for unit, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:,.{digits}f}{unit}"
    return str(n)
