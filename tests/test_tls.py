"""
ccx over TLS: C{--port ssl:...} with a certificate made by the test.
"""

import datetime
import os

from autobahn.twisted.websocket import WebSocketClientFactory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase

from tests.support import Client, ServiceFixture


def make_certificate(directory: str) -> tuple:
    """
    A self-signed certificate for localhost and its key, as PEM files.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TLSTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_wss(self):
        """A wss:// client that trusts the certificate runs a program and gets its output."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key_path, cert_path = make_certificate(directory)
        port = f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
        ccx = yield ServiceFixture(self, port=port).start()
        with open(cert_path, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        factory = WebSocketClientFactory(f"wss://localhost:{ccx.port}/ws/mcp")
        factory.protocol = Client
        endpoint = SSL4ClientEndpoint(
            reactor, "127.0.0.1", ccx.port, optionsForClientTLS("localhost", trustRoot=trust)
        )
        client = yield endpoint.connect(factory)
        ccx.clients.append(client)
        yield client.opened
        result = yield ccx.execute(client, {"command": "seq 1 1000"})
        done = yield client.notification("process.completed", result["process_id"])
        self.assertEqual(done["status"], "completed")
        expected = "".join(f"{i}\n" for i in range(1, 1001)).encode()
        self.assertEqual(client.output(result["process_id"]), expected)
