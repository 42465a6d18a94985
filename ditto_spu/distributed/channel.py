"""The control channel between the driver and a node: framed messages over TCP, wrapped
in TLS when the deployment enables it, opened by a mutual HMAC challenge on the key.

``multiprocessing.connection`` reads and writes its socket's file descriptor directly, so
it cannot run over an ``ssl`` socket; this module is the small replacement::

    frame = [8-byte big-endian length][payload]

A payload is one :mod:`.wire` message (the schema; nothing is unpickled). A frame longer
than the receiver's limit is refused before it is read (:class:`~.wire.WireError`).

Opening a connection (inside TLS when it is on; the driver speaks first, so a client
without TLS is refused by a TLS node at once):

1. peer → node: ``HELLO`` + role + `` `` + 32 random bytes *m*; the role is ``driver``
   (the operator: ``run``, ``shutdown``), ``owner`` (uploads weights) or ``client``
   (queries); each role has its own key (config ``authkey_env``, ``owner_key_env``,
   ``client_key_env``);
2. node → peer: ``CHALLENGE`` + 32 random bytes *n*;
3. peer → node: HMAC-SHA256(key[role], ``driver:`` role ‖ *n*);
4. node → peer: ``WELCOME`` + HMAC-SHA256(key[role], ``node:`` role ‖ *m* ‖ *n*) — or
   ``FAILURE``, and it closes the connection and logs the rejection;
5. the peer checks the node's answer (a peer without the key cannot give it).

The node then knows the connection's role and accepts only that role's requests
(:data:`ditto_spu.distributed.node.ROLE_REQUESTS`): a client key cannot upload.

With ``link.tls.enabled`` the node presents the certificate ``link.tls.cert`` (key
``link.tls.key``) and the driver verifies it against ``link.tls.ca``, as the brpc links
between nodes do: the chain is checked, the name in the certificate is not (nodes are
usually addressed by IP), so the CA must sign the deployment's nodes only. The HMAC key
still authenticates the driver. A node never waits more than :data:`HANDSHAKE_TIMEOUT_S`
for a peer's TLS handshake or challenge answer, so a silent or plaintext client cannot
stall it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import ssl
import struct

from ..errors import DittoError
from .wire import WireError

HANDSHAKE_TIMEOUT_S = 10.0
_LEN = struct.Struct(">Q")
_HELLO, _CHALLENGE = b"ditto-spu/1 hello ", b"ditto-spu/1 challenge "
_WELCOME, _FAILURE = b"ditto-spu/1 welcome ", b"ditto-spu/1 failure"
_NONCE = 32
_HANDSHAKE_MAX = 256


class AuthenticationError(DittoError):
    """The peer does not hold the deployment's key (or does not follow the handshake)."""


def server_context(config) -> ssl.SSLContext | None:
    """The node's TLS context (its certificate and key), or None when TLS is off."""
    if not config.link.tls_enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.link.tls_cert, config.link.tls_key)
    except (ssl.SSLError, OSError) as e:
        raise DittoError(
            f"{config.path}: cannot load link.tls.cert {config.link.tls_cert} with link.tls.key "
            f"{config.link.tls_key} for the control channel: {e}"
        ) from None
    return ctx


def client_context(config) -> ssl.SSLContext | None:
    """The driver's TLS context: verifies a node's certificate against ``link.tls.ca``."""
    if not config.link.tls_enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # chain only, like the brpc links (see the module docstring)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=config.link.tls_ca)
    except (ssl.SSLError, OSError) as e:
        raise DittoError(f"{config.path}: cannot load link.tls.ca {config.link.tls_ca}: {e}") from None
    return ctx


class Connection:
    """One framed, authenticated connection (plain TCP or TLS)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.role = ""  # on a node: the role the peer authenticated as

    # -- framing ---------------------------------------------------------------------------

    def send_bytes(self, data) -> None:
        view = memoryview(data)
        self.sock.sendall(_LEN.pack(view.nbytes))
        self.sock.sendall(view)

    def recv_bytes(self, maxlength: int) -> bytes:
        """One frame of at most ``maxlength`` bytes. EOFError if the peer closed the
        connection between frames; WireError if the frame is over the limit (it is not
        read) or the connection ends inside it."""
        head = self._recv_exact(_LEN.size, at_frame_start=True)
        (n,) = _LEN.unpack(head)
        if n > maxlength:
            raise WireError(f"message of {n} bytes is larger than the limit of {maxlength} bytes")
        return bytes(self._recv_exact(n, at_frame_start=False))

    def _recv_exact(self, n: int, *, at_frame_start: bool) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if k == 0:
                if got == 0 and at_frame_start:
                    raise EOFError("the peer closed the control connection")
                raise WireError(f"the connection ended inside a frame ({got} of {n} bytes received)")
            got += k
        return buf

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether a frame (or EOF) can be read without waiting longer than ``timeout``."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def tls_version(self) -> str | None:
        """``"TLSv1.3"`` and so on on a TLS connection, None on plain TCP."""
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait(connections, timeout: float) -> list:
    """The connections among ``connections`` that have data (like
    ``multiprocessing.connection.wait``; data already decrypted by TLS counts)."""
    ready = [c for c in connections if isinstance(c.sock, ssl.SSLSocket) and c.sock.pending()]
    if ready:
        return ready
    readable, _, _ = select.select(list(connections), [], [], timeout)
    return readable


def _mac(key: bytes, role: bytes, *nonces: bytes) -> bytes:
    return hmac.new(key, role + b"".join(nonces), hashlib.sha256).digest()


ROLES = ("driver", "owner", "client")


class Listener:
    """A node's control listener; :meth:`accept` returns an authenticated Connection or
    raises (OSError, ssl.SSLError, AuthenticationError, WireError, EOFError) — the caller
    logs it and keeps serving. ``keys``: {role: key}, or one key (the driver's only).
    The connection's ``role`` says which key it proved."""

    def __init__(self, address: tuple, keys, ssl_context: ssl.SSLContext | None):
        self.keys = dict(keys) if isinstance(keys, dict) else {"driver": bytes(keys)}
        self.ssl_context = ssl_context
        self.sock = socket.create_server(address, backlog=64)

    def accept(self) -> Connection:
        raw, peer = self.accept_raw()
        return self.authenticate(raw, peer)

    def accept_raw(self) -> tuple:
        """A new TCP connection, not yet authenticated (:meth:`authenticate` it, e.g. in
        a thread of its own so a slow peer does not hold up the others)."""
        return self.sock.accept()

    def authenticate(self, raw: socket.socket, peer) -> Connection:
        sock = raw
        where = f"{peer[0]}:{peer[1]}"
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_S)
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    raise ssl.SSLError(f"TLS handshake with {where} failed (a client without TLS?): {e}") from None
            conn = Connection(sock)
            hello = conn.recv_bytes(_HANDSHAKE_MAX)
            rest = hello[len(_HELLO):]
            role = rest[: -_NONCE - 1].decode("ascii", "replace")
            if not hello.startswith(_HELLO) or rest[-_NONCE - 1 : -_NONCE] != b" " or role not in self.keys:
                raise AuthenticationError(f"{where} did not open with the control channel's greeting (or an unknown role)")
            m = rest[-_NONCE:]
            n = os.urandom(_NONCE)
            conn.send_bytes(_CHALLENGE + n)
            answer = conn.recv_bytes(_HANDSHAKE_MAX)
            key, tag = self.keys[role], role.encode()
            if not hmac.compare_digest(answer, _mac(key, b"driver:" + tag, n)):
                conn.send_bytes(_FAILURE)
                raise AuthenticationError(f"{where} failed the key challenge as {role} (wrong key?)")
            conn.send_bytes(_WELCOME + _mac(key, b"node:" + tag, m, n))
            sock.settimeout(None)
            conn.role = role
            return conn
        except BaseException:
            sock.close()
            raw.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(address: tuple, authkey: bytes, ssl_context: ssl.SSLContext | None, timeout: float = 30.0,
            role: str = "driver") -> Connection:
    """Open an authenticated connection to a node's ``address`` as ``role`` (whose key
    ``authkey`` is). ConnectionError (and other
    OSError) when nothing listens; ssl.SSLError when the TLS handshake fails (e.g. the
    node's certificate does not verify, or the node runs without TLS);
    AuthenticationError when the node refuses the key or cannot prove it holds it."""
    where = f"{address[0]}:{address[1]}"
    raw = socket.create_connection(address, timeout=timeout)
    sock = raw
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(raw)
            except ssl.SSLError:
                raise
            except OSError as e:  # e.g. reset: a node without TLS drops the ClientHello
                raise ssl.SSLError(f"the node at {where} ended the TLS handshake ({e})") from None
        conn = Connection(sock)
        m = os.urandom(_NONCE)
        try:
            conn.send_bytes(_HELLO + role.encode() + b" " + m)
            challenge = conn.recv_bytes(_HANDSHAKE_MAX)
        except (EOFError, WireError, ConnectionError) as e:
            raise AuthenticationError(
                f"the node at {where} closed the connection at the greeting ({e}): "
                "does its config enable TLS (link.tls) and this one not?"
            ) from None
        if not challenge.startswith(_CHALLENGE) or len(challenge) != len(_CHALLENGE) + _NONCE:
            raise AuthenticationError(f"the peer at {where} is not a ditto-spu node (unexpected greeting)")
        n = challenge[len(_CHALLENGE):]
        conn.send_bytes(_mac(authkey, b"driver:" + role.encode(), n))
        try:
            reply = conn.recv_bytes(_HANDSHAKE_MAX)
        except (EOFError, WireError, ConnectionError):
            reply = b""
        if not reply.startswith(_WELCOME):
            raise AuthenticationError(f"the node at {where} refused the {role} key")
        if not hmac.compare_digest(reply[len(_WELCOME):], _mac(authkey, b"node:" + role.encode(), m, n)):
            raise AuthenticationError(f"the node at {where} does not hold the deployment's key")
        sock.settimeout(None)
        return conn
    except BaseException:
        sock.close()
        raw.close()
        raise
