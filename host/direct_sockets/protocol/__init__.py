"""The wire: frames, message schemas and their validation, error codes, and the sans-I/O state machines of each socket kind."""
