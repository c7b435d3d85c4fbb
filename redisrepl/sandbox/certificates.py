"""The sandbox's certificates, made with ``cryptography``: EC P-256 keys, a CA, the
hub's server certificate and client certificates.

:func:`generate_certificates` writes the whole set a sandbox starts with;
:func:`write_client_certificate` and :func:`write_server_certificate` issue one
more from the CA's two files, at any time of the sandbox's life.  Certificates
are ``<base>.pem``; keys are ``<base>.key``, unencrypted PKCS#8 of mode 0600.
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_CN = "redisrepl-sandbox-client"

#: Validity in days from now: (not before, not after).
Days = tuple[int, int]


def generate_certificates(directory: str) -> dict[str, str]:
    """Write every PEM file into ``directory``; return {attribute name: path}.

    Good CA -> server (SAN DNS:localhost only), client (CN=redisrepl-sandbox-client),
    wrong-host server (SAN DNS:wrong.example); other CA -> other client.
    Keys are unencrypted PKCS#8, mode 0600.
    """
    os.makedirs(directory, exist_ok=True)
    ca = _issue("redisrepl sandbox CA", ca=True)
    other_ca = _issue("redisrepl sandbox other CA", ca=True)
    issued = {
        "ca": ca,
        "server": _issue("localhost", ca, san="localhost", usage=ExtendedKeyUsageOID.SERVER_AUTH),
        "client": _issue(CLIENT_CN, ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        "wrong_host": _issue("wrong.example", ca, san="wrong.example", usage=ExtendedKeyUsageOID.SERVER_AUTH),
        "other_ca": other_ca,
        "other_client": _issue(CLIENT_CN, other_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
    }
    paths = {}
    for stem, (cert, key) in issued.items():
        cert_path, key_path = _write_pair(os.path.join(directory, stem.replace("_", "-")), cert, key)
        paths[stem + "_cert"] = cert_path
        paths[stem + "_key"] = key_path
    return paths


def write_client_certificate(base: str, cn: str, ca_cert_path: str, ca_key_path: str) -> tuple[str, str]:
    """A client certificate (clientAuth, like ``client``) for ``cn``, signed by the CA in
    the two PEM files, written to ``base``.pem and ``base``.key; (cert path, key path).

    Reads the CA back from its files so that a certificate can be issued at any time
    of the sandbox's life (a site added late, a renewed certificate)."""
    cert, key = _issue(cn, _read_ca(ca_cert_path, ca_key_path), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return _write_pair(base, cert, key)


def write_chained_client_certificate(base: str, cn: str, ca_cert_path: str, ca_key_path: str) -> tuple[str, str, str]:
    """A client certificate for ``cn`` signed by an intermediate CA that the CA in
    the two PEM files signed, as many organisations issue them: ``base``.pem holds
    the client certificate then the intermediate one (the chain a client sends),
    ``base``-leaf.pem the client certificate alone; (chain path, key path, leaf path)."""
    intermediate = _issue(f"{cn} intermediate CA", _read_ca(ca_cert_path, ca_key_path), ca=True)
    cert, key = _issue(cn, intermediate, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    chain_path, key_path = _write_pair(base, cert, key)
    with open(chain_path, "ab") as f:
        f.write(intermediate[0].public_bytes(serialization.Encoding.PEM))
    leaf_path = base + "-leaf.pem"
    with open(leaf_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return chain_path, key_path, leaf_path


def write_server_certificate(
    base: str, host: str, ca_cert_path: str, ca_key_path: str, days: Days = (-1, 30), san: bool = True
) -> tuple[str, str]:
    """A server certificate for ``host`` signed by the CA in the two PEM files, valid
    from ``days[0]`` to ``days[1]`` days from now (an expired or future one for tests);
    ``san`` False names the host in the CN only, as old certificates did."""
    cert, key = _issue(
        host,
        _read_ca(ca_cert_path, ca_key_path),
        san=host if san else None,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
    )
    return _write_pair(base, cert, key)


def _issue(cn, issuer=None, *, ca=False, san=None, usage=None, days=(-1, 30)):
    """A fresh P-256 key and its certificate; ``issuer`` is (cert, key), None for self-signed;
    valid from ``days[0]`` to ``days[1]`` days from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256()), key


def _write_pair(base, cert, key):
    """``base``.pem (the certificate) and ``base``.key (unencrypted PKCS#8, 0600); their paths."""
    with open(base + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        base + ".key",
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return base + ".pem", base + ".key"


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def _read_ca(ca_cert_path, ca_key_path):
    with open(ca_cert_path, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    return ca_cert, ca_key
