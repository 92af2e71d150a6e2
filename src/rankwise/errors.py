"""rankwise's exceptions: one base class, a few subclasses, each message saying what to do."""


_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r", "\x0b": "\\v", "\x0c": "\\f", "\x1c": " ",
                              "\x1d": " ", "\x1e": " ", "\x85": " ", "\u2028": " ", "\u2029": " "})


class RankwiseError(Exception):
    """Base class of every error rankwise raises on purpose.

    Its message is always one line: text taken from a user's file (a path, a version string, a key) may
    hold line breaks, which are shown escaped, so a CLI error stays one line whatever the input."""

    def __str__(self) -> str:
        return super().__str__().translate(_LINE_BREAKS)


class ConfigError(RankwiseError, ValueError):
    """A method or training config has a wrong key, type or value."""


class TargetError(RankwiseError, ValueError):
    """Target patterns matched no module, or matched a module that cannot be adapted."""


class AdapterFileError(RankwiseError, OSError):
    """An adapter or checkpoint file is missing, truncated, corrupted or of an unknown format."""


class BaseModelMismatch(RankwiseError, ValueError):
    """An adapter was saved for a different base model than the one it is loaded onto."""


class DataError(RankwiseError, ValueError):
    """A data file has a bad row; the message names the file and line."""


class NotMergeable(RankwiseError, TypeError):
    """The method's update cannot be folded into the base weight."""


class TrainingDiverged(RankwiseError, ArithmeticError):
    """The loss or the trained tensors became NaN or infinite; nothing was saved over earlier work."""
