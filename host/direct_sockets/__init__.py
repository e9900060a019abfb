"""direct-sockets: the native messaging host behind the Direct Sockets WebExtension."""

__version__ = "0.1.0"

# The version of the native messaging protocol (docs/PROTOCOL.md). Bump on incompatible change.
PROTOCOL_VERSION = 1

# The native messaging host name that the extension connects to.
HOST_NAME = "direct_sockets"
