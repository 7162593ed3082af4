"""The base of every error fraudstream reports to a user as a message, not a traceback."""


class FraudstreamError(Exception):
    """An error whose message says what is wrong and which setting or input to fix."""
