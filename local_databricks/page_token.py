"""Opaque ``runs/list`` page tokens: which edge of which page to continue from (keyset pagination,
so that runs submitted between two requests neither repeat nor vanish from the pages)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Literal

from local_databricks.errors import ApiError

Direction = Literal["next", "prev"]


def encode(direction: Direction, run_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"d": direction, "run_id": run_id}).encode()).decode().rstrip("=")


def decode(token: object) -> tuple[Direction, int]:
    """(direction, run id) of a token this service issued; anything else is a 400."""
    try:
        if not isinstance(token, str) or len(token) > 200:
            raise ValueError(token)
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        direction, run_id = data["d"], data["run_id"]
        if direction not in ("next", "prev") or type(run_id) is not int:
            raise ValueError(token)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid page_token: {token!r}") from None
    return direction, run_id
