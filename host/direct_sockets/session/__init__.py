"""One browser connection's state: message dispatch, socket bookkeeping, prompts, and where sockets are built."""
