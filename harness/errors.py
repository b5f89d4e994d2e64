"""The one exception type for problems a user must fix (bad config, missing file, ...).

Its message is one sentence that names the file, key or value and says what to do; the CLI prints
it without a traceback and exits with status 2.
"""


class HarnessError(Exception):
    """A user-facing error: bad input, missing or altered file, inconsistent results."""


class ConfigError(HarnessError):
    """A config key or value failed validation."""
