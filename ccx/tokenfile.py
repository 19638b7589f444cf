"""
The bearer token in a file (C{--token-file}): read the same way by the
service and by its command-line client. Standard library only.
"""


class TokenFileError(ValueError):
    """
    The file gives no token; the text says why, naming the option.
    """


def read_token_file(path: str) -> str:
    """
    The token in the file at C{path}, without surrounding white space.

    @raise TokenFileError: when the file cannot be read or holds no token.
    """
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise TokenFileError(f"--token-file {path}: {e.strerror}")
    if not token:
        raise TokenFileError(f"--token-file {path}: the file is empty")
    return token
