"""Typed errors. Everything a user can cause derives from :class:`FaceRefinerError` and carries a
one-line message that names the file (when there is one) and the reason; the CLI prints that line
and exits non-zero instead of showing a traceback."""

from __future__ import annotations


class FaceRefinerError(Exception):
    """Base class of errors caused by the input or the configuration, not by a bug."""


class InputError(FaceRefinerError):
    """An input file is missing, unreadable, corrupt, of an unsupported kind or unusable."""


class NoFaceError(InputError):
    """No face (or no face large enough) was found in a photo."""


class NothingVisibleError(InputError):
    """No texel of the face shows the photo (the mask covers the whole face): there is nothing to
    complete the texture from."""


class OutputError(FaceRefinerError):
    """An output location cannot be written."""


class WeightsError(FaceRefinerError):
    """Network weights could not be resolved or loaded."""


class ShapeError(ValueError):
    """A tensor or array has the wrong shape, dtype or device. The message names the argument,
    the expected shape and the actual one (a programming error, so not a FaceRefinerError)."""
