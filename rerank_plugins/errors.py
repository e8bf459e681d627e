"""Typed errors raised by rerank_plugins.

Every error says what was received and what to do instead. They all derive from
:class:`RerankPluginsError`, so callers can catch the family in one place.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MissingExtraError",
    "ModelLoadError",
    "RerankInputError",
    "RerankPluginsError",
    "ScorerOutputError",
    "ScoringCancelledError",
]


class RerankPluginsError(Exception):
    """Base class of every error this package raises on purpose."""


class MissingExtraError(RerankPluginsError, ImportError):
    """An optional dependency is not installed.

    The message names the exact ``pip install "rerank-plugins[<extra>]"`` command.
    """

    def __init__(self, package: str, extra: str, feature: str) -> None:
        self.package = package
        self.extra = extra
        self.feature = feature
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed. "
            f'Install it with: pip install "rerank-plugins[{extra}]"'
        )


class ModelLoadError(RerankPluginsError, OSError):
    """A model could not be loaded; the message names the model and the fix."""


class RerankInputError(RerankPluginsError, ValueError):
    """The query or the candidates handed to the reranker are not usable."""


class ScorerOutputError(RerankPluginsError, RuntimeError):
    """A scorer broke its contract (wrong number of scores, NaN or inf)."""


class ConfigError(RerankPluginsError, ValueError):
    """A configuration file or environment variable could not be read."""


class ScoringCancelledError(RerankPluginsError):
    """The async caller stopped waiting (cancelled, timed out): the batches not yet run were skipped."""
