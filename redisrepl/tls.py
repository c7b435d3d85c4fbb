"""Client TLS for the hub: the user's certificate and key, the CA that signed
the proxy's certificate, TLS 1.2 or newer, host name always verified."""

import datetime
from typing import Any

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


class CredentialsError(Exception):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CredentialsError(f"cannot read the {what} {path}: {e.strerror}") from None


def _load_certificates(data, path, what):
    """Every certificate in a PEM file (``cryptography`` objects, in file
    order), or a CredentialsError naming the file."""
    certs = []
    marker = b"-----BEGIN CERTIFICATE-----"
    for block in data.split(marker)[1:]:
        try:
            certs.append(x509.load_pem_x509_certificate(marker + block))
        except ValueError as e:
            raise CredentialsError(f"the {what} {path} holds a damaged certificate: {e}") from None
    if not certs:
        raise CredentialsError(f"the {what} {path} holds no PEM certificate")
    return certs


@attrs.frozen
class ClientCertificate:
    """What the client presents: its key, its certificate and the
    intermediate certificates that follow it in the ``--cert`` file (sent
    too, so that a proxy trusting only the root CA can build the chain)."""

    key: Any
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


class HubCertificateError(Exception):
    """The proxy's certificate failed verification; the message says why."""


# OpenSSL's X509_V_ERR_* codes that a user can act on, as what they mean.
_EXPIRED, _NOT_YET_VALID, _WRONG_PURPOSE = 10, 9, 26
_UNKNOWN_ISSUER = {2, 18, 19, 20, 21}


def _cn(name):
    names = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return f"CN={names[0].value}" if names else "no CN"


def _names(cert):
    """The host names and addresses a certificate is for, from its subjectAltName."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "no subjectAltName"
    return ", ".join(str(n.value) for n in names.value)


def describe_verify_error(cert, error, depth):
    """What is wrong with a certificate (``cryptography``) of the proxy's chain, for a person."""
    which = (
        f"the proxy's certificate ({_cn(cert.subject)})"
        if depth == 0
        else f"the certificate {_cn(cert.subject)} in the proxy's chain"
    )
    if error == _EXPIRED:
        return f"{which} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if error == _NOT_YET_VALID:
        return (
            f"{which} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(or this machine's clock is wrong)"
        )
    if error == _WRONG_PURPOSE:
        return f"{which} is not meant for a TLS server (its extended key usage says otherwise)"
    if error in _UNKNOWN_ISSUER:
        return f"certificate verify failed: {which}, issued by {_cn(cert.issuer)}, is not signed by --ca"
    return f"certificate verify failed: {which} was refused (OpenSSL verify error {error})"


@implementer(IOpenSSLClientConnectionCreator)
class _VerifyingCreator:
    """Twisted's client TLS options, with a verifier that says what is wrong.

    Twisted's own check reports every chain failure as "certificate verify
    failed"; this one reports an expired, a not yet valid or a foreign
    certificate as such, through ``failVerification`` (the reason the
    request then fails with), and checks the host name like Twisted does
    (a certificate without subjectAltName is refused, not waved through).
    """

    def __init__(self, hostname, trust_root, client_certificate):
        self._options = ssl.optionsForClientTLS(
            hostname,
            trustRoot=trust_root,
            extraCertificateOptions={
                "raiseMinimumTo": ssl.TLSVersion.TLSv1_2,
                "privateKey": client_certificate.key,
                "certificate": client_certificate.certificate,
                "extraCertChain": list(client_certificate.chain),
            },
        )
        self._hostname = hostname
        self._identity = (
            IPAddress_ID(hostname) if isIPAddress(hostname) or isIPv6Address(hostname) else DNS_ID(hostname)
        )

    def clientConnectionForTLS(self, tlsProtocol):
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verifier(tlsProtocol))
        return connection

    def _verifier(self, tlsProtocol):
        def verify(connection, cert, error, depth, ok):
            # OpenSSL calls this for every certificate of the chain, and again
            # with ok=False for each problem; the first problem is the report.
            if ok and depth != 0:
                return True
            if ok:
                try:
                    verify_service_identity(extract_patterns(cert), [self._identity], [])
                    return True
                except (VerificationError, CertificateError):
                    cert = cert.to_cryptography()
                    reason = (
                        f"the proxy's certificate ({_cn(cert.subject)}) is not valid for this "
                        f"host name, {self._hostname} (it names {_names(cert)})"
                    )
            else:
                reason = describe_verify_error(cert.to_cryptography(), error, depth)
            tlsProtocol.failVerification(Failure(HubCertificateError(reason)))
            return False

        return verify


@implementer(IPolicyForHTTPS)
class ClientCertificatePolicy:
    """Connection creators that present the client certificate and trust only ``trust_root``."""

    def __init__(self, trust_root, client_certificate):
        self._trust_root = trust_root
        self._client_certificate = client_certificate
        self._creators = {}

    def creatorForNetloc(self, hostname, port):
        # twisted.web's Agent asks for every request, pooled connection or
        # not; building the options is costly, and they do not change.
        creator = self._creators.get((hostname, port))
        if creator is None:
            creator = self._creators[hostname, port] = _VerifyingCreator(
                hostname.decode("ascii"), self._trust_root, self._client_certificate
            )
        return creator


def _check_validity(cert, path, what, now):
    """Expired or not yet valid certificates are refused with their dates."""
    not_before = cert.not_valid_before_utc.replace(tzinfo=None)
    not_after = cert.not_valid_after_utc.replace(tzinfo=None)
    if now < not_before:
        raise CredentialsError(f"the {what} {path} is not valid yet (from {not_before:%Y-%m-%d %H:%M} UTC)")
    if now > not_after:
        raise CredentialsError(f"the {what} {path} expired on {not_after:%Y-%m-%d %H:%M} UTC")


def _public(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_policy(cert_path, key_path, ca_path, key_passphrase=None, now=None):
    """Check the three files and build the HTTPS policy.

    Raises CredentialsError with a one-line reason: unreadable file, not PEM,
    an expired or not yet valid certificate, an encrypted key without (or
    with the wrong) passphrase, a key that does not belong to the
    certificate, an empty CA file. Whether the proxy trusts the client
    certificate only the proxy can tell (it answers HTTP 400). The
    certificates after the first in ``cert_path`` are its chain, sent with it.
    """
    now = now or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    cert_pem = _read(cert_path, "client certificate")
    key_pem = _read(key_path, "client key")
    ca_pem = _read(ca_path, "CA file")
    cert, *chain = _load_certificates(cert_pem, cert_path, "client certificate")
    _check_validity(cert, cert_path, "client certificate", now)
    for extra in chain:
        _check_validity(extra, cert_path, "certificate of the chain in", now)
    encrypted = b"ENCRYPTED" in key_pem
    if encrypted and key_passphrase is None:
        raise CredentialsError(f"the client key {key_path} is encrypted: give its passphrase with --key-password-file")
    try:
        key = serialization.load_pem_private_key(key_pem, key_passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        if encrypted:
            raise CredentialsError(
                f"the client key {key_path} cannot be decrypted with the passphrase of --key-password-file"
            ) from None
        raise CredentialsError(f"the client key {key_path} is not a PEM private key: {e}") from None
    if _public(key.public_key()) != _public(cert.public_key()):
        raise CredentialsError(f"the client key {key_path} does not belong to the certificate {cert_path}")
    cas = _load_certificates(ca_pem, ca_path, "CA file")
    for ca in cas:
        _check_validity(ca, ca_path, "CA certificate in", now)
    trust_root = ssl.trustRootFromCertificates([ssl.Certificate(crypto.X509.from_cryptography(c)) for c in cas])
    return ClientCertificatePolicy(trust_root, ClientCertificate(key, cert, tuple(chain)))


def plain_policy():
    """For an explicitly allowed http:// hub: no TLS is used at all."""
    return BrowserLikePolicyForHTTPS()
