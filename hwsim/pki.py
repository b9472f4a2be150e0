"""A test certificate authority for the simulated account server and its clients (mutual TLS).

    pki = TestPki.create(directory)            # ca.pem + server cert for localhost/127.0.0.1
    device = pki.issue("sim-unit-1", DEVICE)    # the unit's client certificate
    teacher = pki.issue("t-evans", TEACHER)     # a teacher's client certificate

The role of a client is the certificate's organisational unit: `classcam-device` may only upload,
`classcam-teacher` may only read and delete its own recordings (P6).
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from formats.durable import atomic_write
# Re-exported: the roles, named in each certificate's OU.
from hwsim.account_api import DEVICE as DEVICE
from hwsim.account_api import TEACHER as TEACHER


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPki:
    """The files of a test CA in `directory`."""

    __test__ = False  # a test *fixture*, not a pytest test class
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server(self) -> Credential:
        return Credential(self.directory / "server.pem", self.directory / "server.key")

    @classmethod
    def create(cls, directory: Path) -> TestPki:
        """A new CA and a server certificate for localhost, 127.0.0.1 and ::1."""
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "classcam test CA")])
        cert = (_builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                             False), critical=True)
                .sign(key, hashes.SHA256()))
        atomic_write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        atomic_write(directory / "ca.key", _pem(key), mode=0o600)
        pki._issue("localhost", None, pki.server, server=True)
        return pki

    def issue(self, common_name: str, role: str, name: str | None = None) -> Credential:
        """A client certificate for `common_name` with `role` (DEVICE or TEACHER)."""
        stem = name or f"{role}-{common_name}"
        credential = Credential(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        self._issue(common_name, role, credential, server=False)
        return credential

    def _issue(self, common_name: str, role: str | None, out: Credential, server: bool) -> None:
        ca_key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if role:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
        builder = (_builder(x509.Name(attributes), ca.subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        atomic_write(out.cert, cert.public_bytes(serialization.Encoding.PEM))
        atomic_write(out.key, _pem(key), mode=0o600)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30)))


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
