"""A minimal SMTP server on 127.0.0.1 that keeps what it receives.

Plain by default; with `tls=` it offers STARTTLS (or speaks TLS from the first byte with
`implicit_tls=True`) using a certificate made by `make_tls_certs`, and accepts AUTH PLAIN so
a test can see whether a password ever reached it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class _Handler(socketserver.StreamRequestHandler):
    def _start_tls(self, sink: SmtpSink) -> bool:
        """Wrap the connection (server side); False when the client refused our certificate."""
        assert sink.tls is not None
        try:
            self.connection = sink.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            sink.tls_failures.append(type(exc).__name__)
            return False
        sink.encrypted = True
        self.rfile = self.connection.makefile("rb")
        self.wfile = socketserver._SocketWriter(self.connection)  # type: ignore[attr-defined]
        return True

    def finish(self) -> None:
        """The server closes the plain socket it accepted; the TLS one wrapped around it
        is ours to close."""
        super().finish()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.close()

    def handle(self) -> None:
        sink: SmtpSink = self.server.sink  # type: ignore[attr-defined]
        if sink.tls is not None and sink.implicit_tls and not self._start_tls(sink):
            return
        self.wfile.write(b"220 sink ready\r\n")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            raw = line.decode("ascii", "replace").strip()
            command = raw.upper()
            if command.startswith(("EHLO", "HELO")):
                if sink.tls is not None:
                    tls_done = sink.implicit_tls or sink.encrypted
                    extra = b"" if tls_done else b"250-STARTTLS\r\n"
                    self.wfile.write(b"250-sink\r\n" + extra + b"250 AUTH PLAIN\r\n")
                else:
                    self.wfile.write(b"250 sink\r\n")
            elif command.startswith("STARTTLS") and sink.tls is not None:
                self.wfile.write(b"220 go ahead\r\n")
                self.wfile.flush()
                if not self._start_tls(sink):
                    return
            elif command.startswith("AUTH"):
                sink.auth.append(raw)
                self.wfile.write(b"235 accepted\r\n")
            elif command.startswith("DATA"):
                self.wfile.write(b"354 go on\r\n")
                body = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    body.append(chunk)
                sink.messages.append(b"".join(body).decode("utf-8", "replace"))
                self.wfile.write(b"250 queued\r\n")
            elif command.startswith("QUIT"):
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                sink.commands.append(command)
                self.wfile.write(b"250 ok\r\n")


class SmtpSink:
    def __init__(self, tls: ssl.SSLContext | None = None, implicit_tls: bool = False) -> None:
        self.messages: list[str] = []
        self.commands: list[str] = []
        self.auth: list[str] = []  # raw AUTH lines, password included: what reached us
        self.tls_failures: list[str] = []
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.encrypted = False
        self.port = 0


@contextmanager
def smtp_sink(tls: ssl.SSLContext | None = None, implicit_tls: bool = False) -> Iterator[SmtpSink]:
    sink = SmtpSink(tls, implicit_tls)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.sink = sink  # type: ignore[attr-defined]
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="smtp-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class TlsCerts:
    ca_file: Path  # trust this to accept the server
    server: ssl.SSLContext  # what the sink presents

    def client_context(self) -> ssl.SSLContext:
        """A default (verifying) client context that trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls_certs(directory: Path, *, server_names: tuple[str, ...] = ("127.0.0.1",)) -> TlsCerts:
    """A throwaway CA and a server certificate it signs for `server_names` (IPs or DNS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r3mes test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in server_names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file)
    return TlsCerts(ca_file=ca_file, server=server)
