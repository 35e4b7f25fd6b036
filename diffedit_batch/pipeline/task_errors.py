"""What a failed Ray task raised, under Ray's wrappers, and any error as one clean line.

Ray hands a task's exception to the driver wrapped (`RayTaskError(UserCodeException)`, its text the remote
traceback with ANSI colour codes). The driver looks through the wrappers for the errors it has a meaning for (a
manifest file that cannot be read is bad input; a storage failure of the run's own files fails the run) and keeps
every message it stores or prints to one line.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# Ray Data appends "\nFailed to <what> after <n>/<m> attempts (total backoff <s>s)." and its advice to the message.
_RAY_DATA_ADVICE = re.compile(r"\nFailed to .{0,200}? after \d+/\d+ attempts \(total backoff")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # all but the newline, which one_line joins


def original_error(error: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The innermost exception of `types` in `error`'s chain (`__cause__`, Ray's `cause`, `__context__`), or None.
    Innermost: Ray's wrapper classes derive from the original's type too, with the remote traceback as their text."""
    found, seen, current = None, set(), [error]
    while current:
        error = current.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, types):
            found = error
        cause = getattr(error, "cause", None)
        current += [error.__cause__, cause if isinstance(cause, BaseException) else None, error.__context__]
    return found


def task_message(error: BaseException) -> str:
    """`error`'s own message on one line, without the retry advice Ray Data appends to what a task raised."""
    return one_line(_RAY_DATA_ADVICE.split(str(error), maxsplit=1)[0])


def one_line(text: str, limit: int = 500) -> str:
    """`text` without terminal colour codes and control characters, its lines joined, cut to `limit` characters."""
    text = _CONTROL.sub(" ", _ANSI.sub("", text))
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."
