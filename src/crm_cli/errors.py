"""Error wording shared by modules that cannot import each other (a leaf: it imports nothing of crm's)."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type's name: the part of a
    library's (often many-line) message that fits in crm's one-line errors."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def opencv_out_of_memory(exc: BaseException) -> str | None:
    """For OpenCV's out-of-memory error (a ``cv2.error`` saying "Insufficient memory" or "Failed to
    allocate"), a one-line message in NumPy's words, such as "Unable to allocate 45.0 MiB in OpenCV";
    None for any other exception. cv2 is recognised by name, so it is never imported here."""
    if type(exc).__module__ != "cv2" or type(exc).__name__ != "error":
        return None
    text = str(exc)
    if "insufficient memory" not in text.lower() and "failed to allocate" not in text.lower():
        return None
    import re

    # OpenCV writes "... error: (-4:Insufficient memory) Failed to allocate 47185920 bytes in function ...".
    amount = re.search(r"failed to allocate (\d+) bytes", text, re.IGNORECASE)
    if amount is None:
        return "Unable to allocate memory in OpenCV"
    size = int(amount.group(1))
    shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"
    return f"Unable to allocate {shown} in OpenCV"
