"""User-facing errors.

Anything a user can cause (a bad file, a typo in a config, a missing image) raises
:class:`SppdetError` with a one-line message that names the file or field and what is wrong.
Tools catch it, print the message and exit non-zero (see :func:`sppdet.cli.run_tool`).
"""


class SppdetError(Exception):
    """An error caused by user input; its message is shown as-is, without a traceback."""


class ConfigError(SppdetError):
    """A config file or override is invalid."""


class DataError(SppdetError):
    """A dataset, annotation, image or proposal file is invalid."""


class CheckpointError(SppdetError):
    """A checkpoint is missing, corrupt or does not match the config."""
