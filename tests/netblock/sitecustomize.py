"""Block the network for every Python process of the test run (pytest itself and the notebook kernels).

`conftest.py` puts this folder on PYTHONPATH, so Python imports this module at start-up. Connections to
loopback (the Jupyter kernel's own channels) and Unix sockets are allowed; anything else raises at once,
so a notebook that tries to download something fails in CI instead of hanging or silently passing.
"""

import socket

_ALLOWED = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


class NetworkBlockedError(OSError):
    """Raised for any non-loopback connection during the tests."""


def _check(address) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, (str, bytes)) and not isinstance(address, (str, bytes)) and str(host) not in _ALLOWED:
        raise NetworkBlockedError(f"Network access is blocked in the tests (tried {address!r}).")


def _guarded_connect(self, address):
    _check(address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and str(host) not in _ALLOWED:
        raise NetworkBlockedError(f"Network access is blocked in the tests (tried to resolve {host!r}).")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo
