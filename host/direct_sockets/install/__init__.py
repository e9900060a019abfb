"""Putting the host and extension in place for each browser, checking it (doctor), packing and managed deployment."""
