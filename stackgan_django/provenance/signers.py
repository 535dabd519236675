"""Signers for C2PA manifests: a development CA made on first use, PEM files, or a callback for a
key held in a KMS or HSM. Each gives a c2pa Signer (made per process: one made before a fork is
invalid in the child) and the trust anchor that verification accepts."""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

ALGORITHMS = ("es256", "es384", "es512", "ps256", "ed25519")


class SigningUnavailable(RuntimeError):
    """Signing cannot happen now (a timestamp authority is unreachable): try again later."""


class SignerConfigurationError(RuntimeError):
    """The signing key or certificate is missing, unreadable or unusable: an operator must fix it."""


@dataclass
class CertificateStatus:
    subject: str
    not_after: datetime.datetime
    problems: list[str]


def certificate_status(chain_pem: str) -> CertificateStatus:
    certificates = x509.load_pem_x509_certificates(chain_pem.encode())
    leaf = certificates[0]
    now = datetime.datetime.now(datetime.UTC)
    problems = []
    if leaf.not_valid_after_utc <= now:
        problems.append(f"the signing certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    elif leaf.not_valid_before_utc > now:
        problems.append(f"the signing certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku and not any(o.dotted_string in C2PA_EKUS for o in eku):
            problems.append("the signing certificate's extended key usage allows no C2PA signing")
    except x509.ExtensionNotFound:
        problems.append("the signing certificate has no extended key usage (C2PA requires one)")
    if leaf.issuer == leaf.subject:
        problems.append("the signing certificate is self-signed; it must be issued by a CA")
    return CertificateStatus(leaf.subject.rfc4514_string(), leaf.not_valid_after_utc, problems)


# emailProtection, documentSigning and the C2PA claim-signing EKU.
C2PA_EKUS = ("1.3.6.1.5.5.7.3.4", "1.3.6.1.5.5.7.3.36", "1.3.6.1.4.1.62558.2.1")


class BaseSigner(ABC):
    """What the provenance code needs from a signer."""

    algorithm = "es256"
    tsa_url: str | None = None
    is_development = False

    @abstractmethod
    def certificate_chain_pem(self) -> str: ...

    @abstractmethod
    def trust_anchor_pem(self) -> str:
        """The root that verification trusts for this signer's certificates."""

    @abstractmethod
    def c2pa_signer(self): ...

    def problems(self) -> list[str]:
        """Configuration problems, as words an operator can act on (empty when usable)."""
        try:
            return certificate_status(self.certificate_chain_pem()).problems
        except (OSError, ValueError, SignerConfigurationError) as exc:
            return [str(exc)]


def _read(path: str | os.PathLike, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SignerConfigurationError(f"cannot read the {what} at {path}: {exc.strerror or exc}") from exc


class CertificateFileSigner(BaseSigner):
    """A signer whose certificate chain and trust anchor are PEM files."""

    def __init__(self, certificate_chain: str, trust_anchor: str, algorithm: str = "es256", tsa_url: str | None = None):
        if algorithm not in ALGORITHMS:
            raise SignerConfigurationError(f"unknown signing algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
        self.chain_path, self.anchor_path = certificate_chain, trust_anchor
        self.algorithm = algorithm
        self.tsa_url = tsa_url or None

    def certificate_chain_pem(self) -> str:
        return _read(self.chain_path, "signing certificate chain")

    def trust_anchor_pem(self) -> str:
        return _read(self.anchor_path, "trust anchor")


class PemFileSigner(CertificateFileSigner):
    """Production: a certificate chain (end-entity first) and a private key in PEM files."""

    def __init__(self, certificate_chain: str, private_key: str, trust_anchor: str, algorithm: str = "es256",
                 tsa_url: str | None = None):
        super().__init__(certificate_chain, trust_anchor, algorithm, tsa_url)
        self.key_path = private_key

    def c2pa_signer(self):
        import c2pa

        info = c2pa.C2paSignerInfo(self.algorithm.encode(), self.certificate_chain_pem().encode(),
                                   _read(self.key_path, "signing key").encode(),
                                   self.tsa_url.encode() if self.tsa_url else None)
        return c2pa.Signer.from_info(info)


class CallbackSigner(CertificateFileSigner):
    """A key that never leaves a KMS or HSM: ``sign`` (a callable or its dotted path) takes the
    bytes to sign and returns the signature."""

    def __init__(self, sign: Callable[[bytes], bytes] | str, certificate_chain: str, trust_anchor: str,
                 algorithm: str = "es256", tsa_url: str | None = None):
        super().__init__(certificate_chain, trust_anchor, algorithm, tsa_url)
        if isinstance(sign, str):
            from django.utils.module_loading import import_string

            sign = import_string(sign)
        self.sign = sign

    def c2pa_signer(self):
        import c2pa

        algorithm = getattr(c2pa.C2paSigningAlg, self.algorithm.upper())
        return c2pa.Signer.from_callback(self.sign, algorithm, self.certificate_chain_pem(), self.tsa_url)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stackgan-django development")])


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def make_development_ca(folder: Path, days: int = 730) -> None:
    """A root CA and an end-entity signing certificate meeting C2PA's rules (EC P-256, v3,
    CA:false, digitalSignature only, emailProtection EKU, AKI), written atomically."""
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("stackgan-django development root CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start)
          .not_valid_after(now + datetime.timedelta(days=days * 5))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("stackgan-django development signer")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".signing-", dir=folder.parent))
    (staging / "ca.pem").write_text(_pem(ca))
    (staging / "chain.pem").write_text(_pem(leaf) + _pem(ca))
    key_file = staging / "key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    try:
        staging.rename(folder)  # atomic: a second process making one at the same moment loses cleanly
        logger.warning("created a development signing CA in %s (not for production)", folder)
    except OSError:
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()


class DevelopmentSigner(PemFileSigner):
    """A development CA and certificate generated on first use; `check --deploy` warns about it."""

    is_development = True

    def __init__(self, folder: str | os.PathLike | None = None, tsa_url: str | None = None):
        from django.conf import settings

        self.folder = Path(folder) if folder else Path(getattr(settings, "VAR_DIR", Path.cwd() / "var")) / "signing"
        if not (self.folder / "chain.pem").is_file():
            make_development_ca(self.folder)
        super().__init__(str(self.folder / "chain.pem"), str(self.folder / "key.pem"), str(self.folder / "ca.pem"),
                         "es256", tsa_url)
