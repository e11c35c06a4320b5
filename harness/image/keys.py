"""ed25519 keys for the image: made with ssh-keygen, re-encoded for dropbear, fingerprinted."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

from harness import proc
from harness.errors import StageError


def _ssh_string(data: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", data, pos)
    end = pos + 4 + n
    if end > len(data):
        raise StageError("truncated OpenSSH key", stage="image")
    return data[pos + 4 : end], end


def _pack(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def read_openssh_ed25519(path: Path) -> tuple[bytes, bytes]:
    """(seed, public key), 32 bytes each, from an unencrypted OpenSSH private key."""
    lines = path.read_text().strip().splitlines()
    if not lines or lines[0] != "-----BEGIN OPENSSH PRIVATE KEY-----":
        raise StageError(f"{path}: not an OpenSSH private key", stage="image")
    blob = base64.b64decode("".join(lines[1:-1]))
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        raise StageError(f"{path}: not an openssh-key-v1 key", stage="image")
    pos = len(magic)
    cipher, pos = _ssh_string(blob, pos)
    _kdf, pos = _ssh_string(blob, pos)
    _kdfopts, pos = _ssh_string(blob, pos)
    (count,) = struct.unpack_from(">I", blob, pos)
    pos += 4
    if cipher != b"none" or count != 1:
        raise StageError(f"{path}: encrypted or multi-key files are not supported", stage="image")
    _pub, pos = _ssh_string(blob, pos)
    priv, _ = _ssh_string(blob, pos)
    check1, check2 = struct.unpack_from(">II", priv, 0)
    if check1 != check2:
        raise StageError(f"{path}: corrupt private key (check bytes differ)", stage="image")
    p = 8
    ktype, p = _ssh_string(priv, p)
    pub, p = _ssh_string(priv, p)
    secret, p = _ssh_string(priv, p)
    if ktype != b"ssh-ed25519" or len(pub) != 32 or len(secret) != 64 or secret[32:] != pub:
        raise StageError(f"{path}: not a valid ed25519 key", stage="image")
    return secret[:32], pub


def dropbear_ed25519_key(seed: bytes, pub: bytes) -> bytes:
    """A host key in dropbear's own format (as ``dropbearkey -t ed25519`` writes it)."""
    return _pack(b"ssh-ed25519", seed + pub)


def ed25519_public_line(pub: bytes, comment: str = "") -> str:
    line = "ssh-ed25519 " + base64.b64encode(_pack(b"ssh-ed25519", pub)).decode()
    return f"{line} {comment}".rstrip()


def fingerprint(pub: bytes) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of an ed25519 public key."""
    digest = hashlib.sha256(_pack(b"ssh-ed25519", pub)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def generate_ed25519(path: Path, comment: str) -> tuple[bytes, bytes]:
    """Write an ed25519 key pair (``path`` 0600, ``path.pub``) with ssh-keygen."""
    if proc.which("ssh-keygen") is None:
        raise StageError("ssh-keygen not found: sudo apt-get install openssh-client", stage="image")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
             what="ssh-keygen")
    path.chmod(0o600)
    return read_openssh_ed25519(path)
