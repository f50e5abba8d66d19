"""Name helpers shared by the config, the backbones, the mixers and the CLI (one copy of each)."""
from __future__ import annotations

import difflib
from typing import Iterable

#: words the CLI and the config read as booleans
BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def did_you_mean(name: str, options: Iterable[str], *, n: int = 1, cutoff: float = 0.5, quote: str = "repr") -> str:
    """``" Did you mean 'x'?"`` (or ``'x', 'y'`` for ``n > 1``) for the closest options, ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(options), n=n, cutoff=cutoff)
    if not close:
        return ""
    shown = ", ".join(repr(c) if quote == "repr" else f"'{c}'" for c in close)
    return f" Did you mean {shown}?"
