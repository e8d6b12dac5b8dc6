"""The one exception type a user should ever see: a one-line message, no traceback."""


class DnoError(Exception):
    """Bad input or a state the user can fix. The message names the file and the fix."""


def missing_extra(package: str, extra: str) -> DnoError:
    return DnoError(f"{package} is not installed; install it with: pip install 'dno-data[{extra}]'")
