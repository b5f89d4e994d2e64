"""The evaluation machinery: prompt sets, generation runner, scorers, tables, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cogview3-harness")
except PackageNotFoundError:  # run from a checkout that was not pip-installed
    __version__ = "0+unknown"
