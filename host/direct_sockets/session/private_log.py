"""What a private window does is not written down (questionnaire 2.14): not in the store, and
not in the host's log either, where a site and a destination would be as telling as a grant.

The session marks the handling of a private window's message in a context variable; every task
and callback that handling starts inherits it (asyncio copies the context), so a socket's
connect, reads and failures are marked too. The log's handlers then keep such a record's
wording and its numbers (socket ids, codes) and replace every other value with a placeholder.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

PRIVATE: ContextVar[bool] = ContextVar("direct_sockets_private_window", default=False)
PLACEHOLDER = "[private window]"


def _kept(value: object) -> object:
    return value if isinstance(value, int) and not isinstance(value, bool) else PLACEHOLDER


class RedactPrivate(logging.Filter):
    """Keeps a private window's log records free of what it reached and who asked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not PRIVATE.get():
            return True
        if isinstance(record.args, dict):
            record.args = {key: _kept(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_kept(value) for value in record.args)
        elif "%" not in str(record.msg):
            record.msg = f"{PLACEHOLDER} (a message with no template)" if record.msg else record.msg
        if record.exc_info:
            # An exception's text can name an address; its type and where it was raised cannot.
            kind = record.exc_info[0].__name__ if record.exc_info[0] else "exception"
            record.msg = f"{record.msg} ({kind}; details withheld: private window)"
            record.exc_info = None
            record.exc_text = None
        return True
