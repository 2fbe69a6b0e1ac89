"""Warnings that point at the caller's line, not at this package's.

A fit reaches its warnings through generators, sklearn's fit wrapper and (in a search) joblib, so no fixed
``stacklevel`` names the user's call: ``skspectral/_estimator.py:401`` was what a user saw, and Python's
default filter then showed one warning per process for every fit that raised it. Python 3.12's
``skip_file_prefixes`` does this; we support 3.10.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import joblib
import sklearn

# the frames a warning skips: this package's, scikit-learn's (its fit wrapper, a search's loop) and joblib's
# (a search's fits on its threads or in sequence)
# (as imported, which a frame's file name is, and resolved: a venv's lib64 may be a link to its lib)
_SKIPPED = tuple({os.path.dirname(path) + os.sep
                  for module in (sys.modules[__package__], sklearn, joblib)
                  for path in (module.__file__, str(Path(module.__file__).resolve()))})


def _importing(frame) -> bool:
    """A frame of CPython's import machinery, which ``warnings.warn`` skips without counting it in a
    stacklevel (a warning raised while this package is imported points at the ``import`` line)."""
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` at the first frame outside skspectral, scikit-learn, joblib and the import machinery
    (the caller's: the line that called the fit, or imported the package)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(_SKIPPED) or _importing(frame)):
        frame = frame.f_back
        if frame is not None and not _importing(frame):
            level += 1
    warnings.warn(message, category, stacklevel=level + 1 if frame is not None else 2)
