"""Native TLS: `[server.tls]` with a certificate and key; cookies become Secure."""

import datetime
import pathlib
import shutil
import socket
import ssl
import tempfile

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import WEB_REDIRECT, Server


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = pathlib.Path(directory) / "cert.pem"
    key_path = pathlib.Path(directory) / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_native_tls_serves_https_with_secure_cookies():
    directory = tempfile.mkdtemp(prefix="idflow-tls-")
    cert, key = self_signed(directory)
    server = Server(directory, f'\n[server.tls]\ncert = "{cert}"\nkey = "{key}"\n', scheme="https", ca=str(cert))
    server.start()
    try:
        meta = requests.get(server.url("/.well-known/openid-configuration"), verify=str(cert), timeout=10).json()
        assert meta["issuer"].startswith("https://localhost:")
        response = requests.get(server.url(f"/authorize?client_id=demo-web&response_type=code&scope=openid&redirect_uri={WEB_REDIRECT}"),
                                verify=str(cert), allow_redirects=False, timeout=10)
        assert "Secure" in response.headers["Set-Cookie"]
        # Plain HTTP on the TLS port is refused, and a stalled handshake does not block others.
        stalled = socket.create_connection(("127.0.0.1", server.port))
        try:
            assert requests.get(server.url("/healthz"), verify=str(cert), timeout=5).text == "ok\n"
        finally:
            stalled.close()
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.selected_alpn_protocol() in (None, "http/1.1")
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_missing_certificate_is_a_clear_error():
    directory = tempfile.mkdtemp(prefix="idflow-tls-")
    server = Server(directory, '\n[server.tls]\ncert = "missing.pem"\nkey = "missing-key.pem"\n')
    result = server.cli("serve", check=False)
    assert result.returncode == 2 and "server.tls.cert" in result.stderr and "missing.pem" in result.stderr
