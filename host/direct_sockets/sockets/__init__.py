"""The OS sockets a page holds: TCP with its bulk WebSocket transport, UDP, listeners, TLS and certificates."""
