"""Names that become parts of paths, made safe: the one function through which every output name passes.

Task, estimator, optimizer and study names, override values in run folder names, figure and table names of
the report and the results page all come from configs, command lines or results folders, which are
untrusted input. A name is *safe* when it is one path component that cannot climb or hide: not empty, not
``.`` or ``..``, no path separator (``/``, ``\\``), no NUL, no control characters and no bidirectional
formatting characters (which make a name read differently from what it is), at most ``LIMIT`` characters.

``safe_name(text)`` turns any text into a safe name (characters outside letters, digits and ``._-+=,@``
become ``_``; over ``limit``, the end is cut and a hash of the whole text keeps distinct texts distinct);
``check_name(text, what)`` refuses an unsafe name with a message naming it; ``inside(root, *names)`` joins
names under a folder and refuses a result that would lie outside it (symbolic links resolved).
``file_name(stem, suffix)`` is the name of every file the report and the results page write: the stem made
safe with room for any suffix (so ``x.png``, ``x.pdf`` and ``x.csv`` share one stem), then the suffix.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from bench.formats.errors import ConfigError

LIMIT = 120
ALLOWED = re.compile(r"[^\w.\-+=,@]", re.ASCII)
BIDI_CONTROLS = ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI")


def problem(text: object) -> str | None:
    """Why ``text`` is not a safe name, or None when it is."""
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not a string"
    if text in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in text or "\\" in text:
        return "contains a path separator"
    if "\0" in text:
        return "contains a NUL character"
    for character in text:
        category = unicodedata.category(character)
        if category == "Cc":
            return f"contains a control character (U+{ord(character):04X})"
        if unicodedata.bidirectional(character) in BIDI_CONTROLS or category == "Cf":
            return f"contains an invisible or bidirectional formatting character (U+{ord(character):04X})"
    if len(text) > LIMIT:
        return f"is {len(text)} characters long (at most {LIMIT})"
    return None


def is_safe(text: object) -> bool:
    return problem(text) is None


def check_name(text: object, what: str) -> str:
    """``text`` when it is a safe name, else ConfigError naming ``what`` (e.g. ``task.name``) and why."""
    why = problem(text)
    if why is not None:
        raise ConfigError(
            f"{what}={text!r:.80} {why}: names become folder and file names, so they must be a single path "
            f"component of at most {LIMIT} characters (letters, digits and ._-+=,@ are always safe)."
        )
    return str(text)


def safe_name(text: object, limit: int = LIMIT) -> str:
    """A safe name for any text: unsafe characters become ``_``; over ``limit`` characters, the text is cut
    and ``~`` and 8 hex digits of its sha256 appended, so that distinct long texts stay distinct."""
    raw = str(text)
    name = ALLOWED.sub("_", raw).strip(".") or "_"
    if len(name) > limit or name != raw and len(name) > limit - 9:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = name[: max(1, limit - 9)].rstrip(".") + "~" + digest
    return name


SUFFIX_ROOM = 8
"""Characters kept free for a file name's suffix (``.png``, ``.json``, ``.csv``) by ``file_name``."""


def file_name(stem: object, suffix: str = "") -> str:
    """The safe file name for ``stem`` and ``suffix``: ``safe_name(stem)`` cut to leave ``SUFFIX_ROOM``
    characters for any suffix, so that one stem gives the same name before every suffix."""
    if len(suffix) > SUFFIX_ROOM:
        raise ValueError(f"a suffix of at most {SUFFIX_ROOM} characters, got {suffix!r}")
    return safe_name(stem, LIMIT - SUFFIX_ROOM) + suffix


def inside(root: Path, *names: str) -> Path:
    """``root / name / ...`` after checking every name is safe and the result lies inside ``root`` (symbolic
    links resolved); ConfigError otherwise."""
    path = Path(root)
    for name in names:
        path = path / check_name(name, "a file name")
    resolved, base = path.resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(f"{path} would lie outside {root} (a symbolic link?); nothing is written there.")
    return path
