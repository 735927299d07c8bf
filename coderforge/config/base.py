"""What every recipe section shares, and the error a recipe that cannot run raises."""

from __future__ import annotations

import base64

from pydantic import BaseModel, ConfigDict

# kfp.local's subprocess runner rewrites every "python3" inside task arguments (parameter values
# included) to its own interpreter path, which corrupts a recipe that mentions e.g. a python3.11
# directory. `coderforge run` therefore passes the recipe base64-encoded; compiled pipelines carry
# plain JSON.
B64_PREFIX = "base64:"


def encode_recipe_b64(text: str) -> str:
    return B64_PREFIX + base64.b64encode(text.encode("utf-8")).decode("ascii")


class ConfigError(ValueError):
    """A recipe that cannot run, with a message naming the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


