"""The native-messaging process the browser starts: stdio, who called it, and the event loop."""
