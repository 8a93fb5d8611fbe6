"""User errors of the entry points, and the one place that turns them into a one-line ``error:`` exit.

A :class:`UserError` is something the user can fix (a missing data root, a file that is not an annotation
file or a checkpoint, an empty validation split, a run that would overwrite earlier results): ``train``,
``eval`` and ``infer`` print ``error: <message>`` and exit with status 1, without a traceback. Everything
else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

DEBUG_ENV = "HYDRA_FULL_ERROR"  # Hydra's own switch for full tracebacks
USER_ERROR_EXIT = 1

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """An error in the user's input or command, with a message that names the file or key to change."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from vistr_lit.inference.video_io import InputError

    return (UserError, InputError, FileNotFoundError)


def exit_on_user_error(main: F) -> F:
    """Decorate an entry point (under ``@hydra.main``): user errors exit with one ``error:`` line."""

    from omegaconf.errors import MissingMandatoryValue

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (*_user_error_types(), MissingMandatoryValue) as error:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            if isinstance(error, MissingMandatoryValue):  # a ??? key of the config, such as ckpt_path
                message = f"{error.full_key} is required: add {error.full_key}=... to the command"
            else:
                message = str(error).strip() or type(error).__name__
            raise SystemExit(f"error: {message}") from None

    return wrapper  # type: ignore[return-value]
