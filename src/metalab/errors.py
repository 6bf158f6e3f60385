"""The one exception type users see: its message names the problem and the fix."""


class MetalabError(Exception):
    """A problem with the user's input, data or environment, with a message that says how to fix it."""
