"""The options page's requests: the user's grants listed, or some revoked (the extension lets
only its options page ask)."""

from __future__ import annotations

import logging
from typing import Any

from ..protocol.errors import Code, ProtocolError
from ..trust.destinations import InvalidDestination, normalize_host, normalize_origin
from ..trust.permissions import PermissionStore, StoreDamaged
from .table import Emit

log = logging.getLogger(__name__)


async def grants_request(store: PermissionStore, emit: Emit, message: dict[str, Any]) -> None:
    """Answers grants_list, or grants_revoke with the grants left, `damaged` if the store is."""
    damaged = False
    try:
        if message["type"] == "grants_revoke":
            try:
                origin = normalize_origin(message["origin"])
                host = normalize_host(message["host"]) if "host" in message else None
            except InvalidDestination as exc:
                raise ProtocolError(Code.SCHEMA_VIOLATION, f"grants_revoke: {exc}") from exc
            removed = store.revoke(origin, message.get("kind"), host, message.get("port"))
            log.info("the user revoked %d grant(s) of %s from the options page", len(removed), origin)
        grants = store.load()
    except StoreDamaged:
        grants, damaged = [], True
    items = [g.as_dict() for g in grants]
    await emit({"type": "grants", "req": message["req"], "grants": items, "damaged": damaged})
