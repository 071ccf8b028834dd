"""Error wording shared by modules that cannot import each other (a leaf: it imports nothing of crm's,
nor torch or OpenCV)."""

from __future__ import annotations

import os
import re


def count_noun(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is 1: ``1 mask``, ``3 masks``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type's name: the part of a
    library's (often many-line) message that fits in crm's one-line errors."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class ContinuedText(str):
    """A library's many-line message as :func:`continued_lines` lays it out: its line breaks are the
    library's own, never a file name's, so a list of failures keeps them (``report_failure``) where it
    escapes every other one. A str, so it is written to JSON and pickled (Ray) as one."""


def message_of(exc: BaseException) -> str:
    """``str(exc)``, but a message raised as a :class:`ContinuedText` (crm's own list of lines, such
    as training's unreadable pairs) stays one, so that the printer keeps its lines, and an OSError as
    Python words it for a file ("[Errno 13] Permission denied: 'a.json'") reads as crm names files
    ("a.json: permission denied")."""
    if len(exc.args) == 1 and isinstance(exc.args[0], ContinuedText):
        return exc.args[0]
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.filename2 is None and exc.strerror:
        if text == f"[Errno {exc.errno}] {exc.strerror}: {exc.filename!r}":  # Python's own wording, no one else's
            return f"{os.fsdecode(exc.filename)}: {os_reason(exc)}"
    return text


def os_reason(exc: OSError) -> str:
    """Why an OSError happened, in lower case and without its number or file: "permission denied"."""
    return (exc.strerror or str(exc)).lower()


def no_room_words(folder: object, code: int | None) -> str:
    """What a write into ``folder`` that found no room (errno ``code``) ran into, with the system's reason:
    "the disk quota for F is used up (disk quota exceeded)" for EDQUOT, else "the disk holding F is full
    (no space left on device)"."""
    import errno

    where = (f"the disk quota for {folder} is used up" if code is not None and code == getattr(errno, "EDQUOT", None)
             else f"the disk holding {folder} is full")
    return f"{where} ({os.strerror(code or errno.ENOSPC).lower()})"


def one_line(text: str) -> str:
    """``text`` with its line breaks shown as ``\\n`` and ``\\r``: a name put in a ContinuedText,
    whose own line breaks alone start lines."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def continued_lines(text: str, after_first: str = "") -> str:
    """A library's many-line message (torch's CUDA errors add "CUDA kernel errors might be
    asynchronously reported ..." and "For debugging consider passing CUDA_LAUNCH_BLOCKING=1") as crm
    shows one: its first non-blank line, then ``after_first`` (crm's advice), then each further
    non-blank line after a line break and two spaces. crm's error lines keep exactly those breaks
    (``cli.output.printable`` with ``continued``) and show any other one as ``\\n``, so the message
    reads as one error with indented continuation lines, and a name cannot start a line of its own."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        return text.strip() + after_first
    return ContinuedText("\n  ".join([lines[0].strip() + after_first, *lines[1:]]))


def failure_text(exc: BaseException) -> str:
    """How a pair's failure reads in a list of failures: a library's RuntimeError (torch's, many lines
    for a CUDA fault) as :func:`continued_lines`; crm's own errors, whose text may hold a file's name
    with a line break in it, as they are (the printer escapes that break); the type's name if empty."""
    text = str(exc)
    if type(exc) is RuntimeError or type(exc).__module__.split(".")[0] == "torch":
        text = continued_lines(text)
    return text or type(exc).__name__


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
    return _unable_to_allocate(None if amount is None else int(amount.group(1)), "OpenCV")


def _unable_to_allocate(size: int | None, where: str) -> str:
    """NumPy's words for a shortage of ``size`` bytes (None: not known) met in the library ``where``."""
    if size is None:
        return f"Unable to allocate memory in {where}"
    shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"
    return f"Unable to allocate {shown} in {where}"


def onnxruntime_out_of_memory(exc: BaseException) -> str | None:
    """For ONNX Runtime's shortage of memory (its own ``Fail`` exception, an Exception only, saying its
    arena "Failed to allocate memory for requested buffer of size N"), a one-line message in NumPy's
    words, "Unable to allocate 26.3 MiB in ONNX Runtime"; None for any other exception. onnxruntime is
    recognised by module, so it is never imported here."""
    if not type(exc).__module__.startswith("onnxruntime"):
        return None
    amount = re.search(r"failed to allocate memory for requested buffer of size (\d+)", str(exc), re.IGNORECASE)
    return None if amount is None else _unable_to_allocate(int(amount.group(1)), "ONNX Runtime")


# torch's CPU allocator running short, in its error's text.
_CPU_ALLOCATOR_SHORTAGE = re.compile(r"DefaultCPUAllocator: (can't allocate memory|not enough memory)")


def host_memory_error(exc: BaseException) -> MemoryError | None:
    """A MemoryError standing for ``exc`` when it is another library's shortage of the machine's
    memory: OpenCV's or ONNX Runtime's (:func:`opencv_out_of_memory`, :func:`onnxruntime_out_of_memory`,
    in NumPy's words) or torch's on the CPU (its
    DefaultCPUAllocator's text); None for anything else, a GPU's shortage included (torch's own
    ``OutOfMemoryError``, whose advice is another device). The API raises it ``from exc``, so that a
    caller catches one type for "this image does not fit in memory"."""
    if isinstance(exc, RuntimeError) and not isinstance(exc, MemoryError):
        text = str(exc)
        cpu = _CPU_ALLOCATOR_SHORTAGE.search(text)
        return None if cpu is None else MemoryError(text[cpu.start():].strip())
    shortage = opencv_out_of_memory(exc) or onnxruntime_out_of_memory(exc)
    return None if shortage is None else MemoryError(shortage)


# What a thread that could not be started advises.
THREAD_ADVICE = ": this process may start no more threads (a container's pids limit, or ulimit -u?); try --threads 1"


def thread_shortage_message(exc: BaseException) -> str | None:
    """The error line of ``exc`` when no thread could be started (Python's "can't start new thread",
    a native pool's "pthread_create failed": a container's pids limit), with its advice; None for
    any other exception."""
    if not isinstance(exc, RuntimeError):
        return None
    text = first_line(exc)
    if text.startswith("can't start new thread"):
        return f"cannot start a thread ({text}){THREAD_ADVICE}"
    if (native := text.find("pthread_create failed")) >= 0:  # after ONNX Runtime's C++ source position
        return f"cannot start a thread ({text[native:]}){THREAD_ADVICE}"
    return None


def shortage_message(exc: BaseException) -> str | None:
    """The error line of ``exc`` when it is a shortage of the machine's (memory:
    :func:`out_of_memory_message`; threads: :func:`thread_shortage_message`), None otherwise."""
    return out_of_memory_message(exc) or thread_shortage_message(exc)


# What an out-of-memory error line advises (after a MemoryError's own text).
MEMORY_ADVICE = "; try a smaller --tile-size, the 'fast' preset, or a smaller image"


def out_of_memory_message(exc: BaseException) -> str | None:
    """The error line of ``exc`` when it is a shortage of memory, with its advice; None for any other
    exception. crm refine's error, a crm batch item's and a crm coco instance's say the same
    (cli.failures.user_errors, cli.batch.refine_pair_job, coco.iter_image_job).

    A shortage, and its line, is one of:

    - a MemoryError (NumPy's "Unable to allocate ...", Python's own, ONNX Runtime's): its text ("out
      of memory" when it has none) and MEMORY_ADVICE, unless its last clause is advice already, "; try
      ..." or "; free memory ..." (crm's own estimate, cli.checks.memory_problem);
    - torch's on a GPU: a torch.OutOfMemoryError, or a RuntimeError whose text starts with a device's
      "out of memory" ("CUDA error: out of memory", "MPS backend out of memory"): its text and the
      advice to try the CPU (after its first line, the others indented below: :func:`continued_lines`);
    - torch's on the CPU: a RuntimeError of DefaultCPUAllocator failing to allocate: its text from
      that name on (without the C++ source position before it) and MEMORY_ADVICE;
    - OpenCV's (:func:`opencv_out_of_memory`) and ONNX Runtime's (:func:`onnxruntime_out_of_memory`), in
      NumPy's words, and MEMORY_ADVICE.

    Any other exception is not, whatever its text mentions. torch is never imported here.
    """
    import re
    import sys

    if isinstance(exc, MemoryError):
        message = str(exc) or "out of memory"
        _, clause_break, last_clause = message.rpartition("; ")
        advised = bool(clause_break) and last_clause.startswith(("try ", "free memory"))
        return message if advised else message + MEMORY_ADVICE
    if isinstance(exc, RuntimeError):
        text = str(exc)
        # Looked up, not imported: none of torch's errors exists before torch is.
        gpu_shortage = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
        if (gpu_shortage is not None and isinstance(exc, gpu_shortage)) or re.match(
                r"(CUDA|HIP|XPU|MPS backend)( error:)? out of memory", text):
            return continued_lines(text, ". Try --device cpu, a smaller --tile-size or the 'fast' preset.")
        if (cpu := _CPU_ALLOCATOR_SHORTAGE.search(text)) is not None:
            return continued_lines(text[cpu.start():], MEMORY_ADVICE)
        return None
    shortage = opencv_out_of_memory(exc) or onnxruntime_out_of_memory(exc)
    return None if shortage is None else shortage + MEMORY_ADVICE
