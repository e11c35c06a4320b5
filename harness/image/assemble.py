"""Assembling a guest image from its recipe: keys, /etc, binaries and /init into images/<key>/."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import archive, cache, progress
from harness.errors import InputError, StageError
from harness.image import cpio, entry
from harness.image.cpio import CpioMember
from harness.image.debsrc import DebianSource, fetch_sources, local_sources
from harness.image.initscript import HOST_KEY_PATH, INIT_MILESTONES, render_init
from harness.image.keys import dropbear_ed25519_key, ed25519_public_line, fingerprint, generate_ed25519
from harness.image.recipe import Recipe
from harness.image.toolchain import guest_toolchain
from harness.image.userland import build_busybox, build_dropbear, build_program


@dataclass(frozen=True)
class Image:
    recipe_name: str
    recipe_hash: str
    directory: Path
    initramfs: Path
    client_keys: dict[str, Path]  # user name -> OpenSSH private key (0600)
    host_key_fingerprint: str  # "SHA256:..."
    host_public_key: str  # "ssh-ed25519 AAAA..."
    users: dict[str, int] = field(default_factory=dict)  # user name -> uid
    ssh_port: int = 22  # in the guest
    cached: bool = False
    key: str = ""  # the directory name: the recipe hash and the Debian versions built
    sources: dict[str, str] = field(default_factory=dict)  # package -> exact Debian version

    def client_key(self, user: str) -> Path:
        try:
            return self.client_keys[user]
        except KeyError:
            raise InputError(
                f"image {self.recipe_name} has no user {user!r} "
                f"(users: {', '.join(self.client_keys)})"
            ) from None

    @staticmethod
    def load(directory: Path) -> Image | None:
        """The image in ``directory`` if it has one (checked: see :mod:`~harness.image.entry`), else None.

        A damaged entry is moved aside, saying why, and None returned: the caller builds it anew.
        """
        try:
            return Image._parse(directory)
        except entry.BadManifest as exc:
            entry.set_aside(directory, exc)
            return None

    @staticmethod
    def _parse(directory: Path) -> Image | None:
        data = entry.read(directory, "image.json", directory.name,
                          ("recipe_name", "recipe_hash", "host_key_fingerprint", "host_public_key"))
        if data is None:
            return None
        users = data.get("users")
        port = data.get("ssh_port")
        if not isinstance(users, dict) or not all(isinstance(u, int) for u in users.values()):
            raise entry.BadManifest(f"users is {users!r}, expected an object of uids")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise entry.BadManifest(f"ssh_port is {port!r}, expected a port number")
        sources = data.get("sources", {})
        if not isinstance(sources, dict) or not all(
                isinstance(s, dict) and isinstance(s.get("version"), str) for s in sources.values()):
            raise entry.BadManifest("sources is not an object of {version: ...} objects")
        return Image(
            recipe_name=data["recipe_name"],
            recipe_hash=data["recipe_hash"],
            directory=directory,
            initramfs=entry.files(directory, "initramfs", {"": data.get("initramfs")})[""],
            client_keys=entry.files(directory, "client_keys", data.get("client_keys")),
            host_key_fingerprint=data["host_key_fingerprint"],
            host_public_key=data["host_public_key"],
            users={str(u): uid for u, uid in users.items()},
            ssh_port=port,
            cached=True,
            key=directory.name,
            sources={n: s["version"] for n, s in sources.items()},
        )


def image_key(recipe: Recipe, sources: Mapping[str, DebianSource | None]) -> str:
    """The recipe's hash and the exact Debian version of each package (``none`` for one not at hand)."""
    versions = [f"{name}={s.source}_{s.version}" if s is not None else f"{name}=none"
                for name, s in sorted(sources.items())]
    return cache.digest(recipe.recipe_hash, *versions, length=16)


def image_dir(recipe: Recipe, sources: Mapping[str, DebianSource | None] | None = None) -> Path:
    """Where the image of ``recipe`` is, with ``sources`` or those downloads/ holds now (no network)."""
    return cache.subdir("images") / image_key(recipe, local_sources(recipe) if sources is None else sources)


def _etc_files(recipe: Recipe, host_key: bytes) -> list[CpioMember]:
    passwd = "".join(
        f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:{u.home}:{u.shell}\n" for u in recipe.users
    )
    # "!" locks every password: logins are by key only.
    shadow = "".join(f"{u.name}:!:1:0:99999:7:::\n" for u in recipe.users)
    group = "".join(f"{g.name}:x:{g.gid}:{','.join(g.members)}\n" for g in recipe.groups)
    shells = "".join(sorted({"/bin/sh\n", "/bin/ash\n"} | {u.shell + "\n" for u in recipe.users}))
    return [
        CpioMember("etc/passwd", data=passwd.encode(), mode=0o644),
        CpioMember("etc/shadow", data=shadow.encode(), mode=0o600),
        CpioMember("etc/group", data=group.encode(), mode=0o644),
        CpioMember("etc/shells", data=shells.encode(), mode=0o644),
        CpioMember("etc/hostname", data=f"{recipe.hostname}\n".encode(), mode=0o644),
        cpio.directory("etc/dropbear", 0o700),
        CpioMember(HOST_KEY_PATH.lstrip("/"), data=host_key, mode=0o600),
    ]


def image_members(
    recipe: Recipe,
    *,
    init: str,
    binaries: Mapping[str, Path],
    busybox_links: Sequence[str],
    host_key: bytes,
    authorized_keys: Mapping[str, str],
) -> list[CpioMember]:
    """Every member of the initramfs (validated by :func:`cpio.check_members`)."""
    members: list[CpioMember] = [
        cpio.directory(d)
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys",
                  "var", "var/log", "var/run", "mnt", "home")
    ]
    members += [
        cpio.directory("tmp", 0o1777),
        cpio.chardev("dev/console", 5, 1, 0o600),  # the kernel opens it before /init
        CpioMember("init", data=init.encode(), mode=0o755),
    ]
    for guest_path, host_path in binaries.items():
        members.append(CpioMember(guest_path.lstrip("/"), data=host_path, mode=0o755))
    taken = {m.path for m in members} | {p.lstrip("/") for p in binaries}
    taken |= {f.path.lstrip("/") for f in recipe.files}
    for link in busybox_links:
        rel = archive.normalize_member(link.lstrip("/"), what="busybox applet")
        if rel not in taken and rel != "linuxrc":
            members.append(cpio.symlink(rel, "/bin/busybox"))
            taken.add(rel)
    members += _etc_files(recipe, host_key)
    for u in recipe.users:
        home = u.home.lstrip("/")
        keys = [authorized_keys[u.name], *u.authorized_keys]
        members += [
            cpio.directory(home, 0o700, u.uid, u.gid),
            cpio.directory(f"{home}/.ssh", 0o700, u.uid, u.gid),
            CpioMember(f"{home}/.ssh/authorized_keys", data=("\n".join(keys) + "\n").encode(),
                       mode=0o600, uid=u.uid, gid=u.gid),
        ]
    for f in recipe.files:
        members.append(CpioMember(f.path.lstrip("/"), data=f.content, mode=f.mode,
                                  uid=f.uid, gid=f.gid))
    return cpio.check_members(members)


def _contents(members: Sequence[CpioMember]) -> str:
    lines = []
    for m in members:
        extra = f" -> {m.payload().decode()}" if m.kind == "symlink" else ""
        if m.kind == "chardev":
            extra = f" {m.rdev[0]},{m.rdev[1]}"
        lines.append(f"{m.kind:8} {m.mode:04o} {m.uid:5}:{m.gid:<5} /{m.path}{extra}")
    return "\n".join(lines) + "\n"


def build_image(recipe: Recipe, *, jobs: int | None = None, force: bool = False) -> Image:
    """Build (or find in the cache) the image of ``recipe``.

    ``force`` rebuilds the image and asks apt again for the newest source
    versions the recipe admits (otherwise those already downloaded are used).
    """
    jobs = jobs or os.cpu_count() or 1
    sources = fetch_sources(recipe, refresh=force)
    key = image_key(recipe, sources)
    final = cache.subdir("images") / key
    with cache.lock(f"image-{key}", f"image {recipe.name}"):
        if not force:
            cached = Image.load(final)
            if cached is not None:
                return cached
        init = render_init(recipe)  # template errors before any long step
        tc = guest_toolchain()
        busybox = build_busybox(recipe.packages["busybox"], sources["busybox"], tc, jobs)
        dropbear = build_dropbear(recipe.packages["dropbear"], sources["dropbear"], tc, jobs)
        programs = [build_program(p, tc) for p in recipe.programs]
        binaries: dict[str, Path] = {}
        for part in (busybox, dropbear, *programs):
            binaries.update(part.binaries)

        with progress.step(f"assemble image {recipe.name} ({key})"), \
                cache.staged_dir(final) as stage:
            keys = stage / "keys"
            seed, host_pub = generate_ed25519(keys / "host_ed25519", f"harness-host-{key}")
            client_keys: dict[str, str] = {}
            authorized: dict[str, str] = {}
            for u in recipe.users:
                rel = f"keys/{u.name}_ed25519"
                _, pub = generate_ed25519(stage / rel, f"harness-{u.name}-{key}")
                client_keys[u.name] = rel
                authorized[u.name] = ed25519_public_line(pub, f"harness-{u.name}")
            members = image_members(
                recipe,
                init=init,
                binaries=binaries,
                busybox_links=busybox.links,
                host_key=dropbear_ed25519_key(seed, host_pub),
                authorized_keys=authorized,
            )
            cpio.write_cpio(members, stage / "initramfs.cpio.gz")
            (stage / "init").write_text(init)
            (stage / "contents.txt").write_text(_contents(members))
            cache.write_json_atomic(stage / "image.json", {
                "recipe_name": recipe.name,
                "recipe_hash": recipe.recipe_hash,
                "key": key,
                "recipe": str(recipe.path),
                "initramfs": "initramfs.cpio.gz",
                "client_keys": client_keys,
                "host_key_fingerprint": fingerprint(host_pub),
                "host_public_key": ed25519_public_line(host_pub),
                "users": {u.name: u.uid for u in recipe.users},
                "ssh_port": recipe.network.ssh_port,
                "milestones": list(INIT_MILESTONES),
                "sources": {name: s.meta() for name, s in sorted(sources.items())},
                "userland": {
                    "busybox": busybox.directory.name,
                    "dropbear": dropbear.directory.name,
                    **{p.directory.name.rsplit("-", 1)[0]: p.directory.name for p in programs},
                },
                "canonical_recipe": recipe.canonical(),
            })
    image = Image.load(final)
    if image is None:  # pragma: no cover - staged_dir guarantees the files
        raise StageError(f"image {final} is incomplete after building", stage="image")
    return dataclasses.replace(image, cached=False)
