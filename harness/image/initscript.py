"""The guest's /init: its serial-console protocol (milestones), the device nodes it makes, its rendering."""

from __future__ import annotations

import jinja2

from harness.errors import InputError
from harness.image.recipe import Recipe

MILESTONE_PREFIX = "HARNESS-MILESTONE:"
MILESTONE_INIT_START = "HARNESS-MILESTONE: init-start"
MILESTONE_NETWORK_UP = "HARNESS-MILESTONE: network-up"
MILESTONE_SSHD_UP = "HARNESS-MILESTONE: sshd-up"
#: followed by a reason; init then idles so the console can be read
MILESTONE_FAILED = "HARNESS-MILESTONE: init-failed"
#: followed by "halt", "poweroff" or "reboot"; the guest then restarts (QEMU
#: exits with -no-reboot)
MILESTONE_SHUTDOWN = "HARNESS-MILESTONE: shutdown"
#: the lines /init prints on a good boot, in order (console.BOOT_MILESTONES adds the kernel's)
INIT_MILESTONES = (MILESTONE_INIT_START, MILESTONE_NETWORK_UP, MILESTONE_SSHD_UP)

HOST_KEY_PATH = "/etc/dropbear/dropbear_ed25519_host_key"

#: device nodes /init creates (2.6.20 has no devtmpfs): name, type, major, minor, mode
DEVICES: tuple[tuple[str, str, int, int, int], ...] = (
    ("console", "c", 5, 1, 0o600),
    ("null", "c", 1, 3, 0o666),
    ("zero", "c", 1, 5, 0o666),
    ("full", "c", 1, 7, 0o666),
    ("random", "c", 1, 8, 0o666),
    ("urandom", "c", 1, 9, 0o666),
    ("kmsg", "c", 1, 11, 0o600),
    ("tty", "c", 5, 0, 0o666),
    ("ptmx", "c", 5, 2, 0o666),
    ("ttyS0", "c", 4, 64, 0o600),
)


def render_init(recipe: Recipe) -> str:
    """Render the recipe's /init template."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    context = {
        "recipe_name": recipe.name,
        "hostname": recipe.hostname,
        "network": {
            "address": recipe.network.address,
            "prefix": recipe.network.prefix,
            "netmask": recipe.network.netmask,
            "gateway": recipe.network.gateway,
            "ssh_port": recipe.network.ssh_port,
        },
        "ssh_port_hex": f"{recipe.network.ssh_port:04X}",
        "host_key": HOST_KEY_PATH,
        "milestones": {
            "prefix": MILESTONE_PREFIX,
            "init_start": MILESTONE_INIT_START,
            "network_up": MILESTONE_NETWORK_UP,
            "sshd_up": MILESTONE_SSHD_UP,
            "failed": MILESTONE_FAILED,
            "shutdown": MILESTONE_SHUTDOWN,
        },
        "devices": [
            {"name": n, "type": t, "major": ma, "minor": mi, "mode": mo}
            for n, t, ma, mi, mo in DEVICES
        ],
        "users": [{"name": u.name, "uid": u.uid, "home": u.home} for u in recipe.users],
    }
    where = recipe.init_template
    try:
        text = env.from_string(recipe.init_source).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"{where}: line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"{where}: {exc.message}") from None
    if not text.startswith("#!"):
        raise InputError(f"{where}: /init must start with a #! line")
    return text
