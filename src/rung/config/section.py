"""The base of every ``rung.yaml`` section model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A block of ``rung.yaml``: an unknown key is an error, because a misspelt key silently ignored
    is a setting the user believes in and does not have; and settings never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
