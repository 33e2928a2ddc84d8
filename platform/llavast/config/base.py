"""The base of every config model: frozen (configs are created once and passed down) and strict.

`extra="forbid"` turns a misspelt key into an error naming it, instead of a silently ignored setting.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen, strict config section."""

    model_config = ConfigDict(frozen=True, extra="forbid")
