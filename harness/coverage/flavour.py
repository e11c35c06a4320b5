"""The coverage build flavour: any config plus CONFIG_DEBUG_INFO, with the same machine code.

``CONFIG_DEBUG_INFO`` depends on ``CONFIG_DEBUG_KERNEL``, and turning
``DEBUG_KERNEL`` on makes kconfig give three other symbols their default of
``y`` (soft-lockup detection, verbose BUG() reports, forced inlining), which
would change the kernel under test.  The flavour keeps them at the value they
had: measured on ``rcfs-fixes/default``, ``.text`` and ``System.map`` are then
identical to the build without debug info (only ``vmlinux`` grows, 2.4 -> 22 MB).
"""

from __future__ import annotations

from collections.abc import Mapping

#: symbols ``DEBUG_KERNEL=y`` exposes with a default of ``y`` on 2.6.20 i386
DEBUG_KERNEL_DEFAULTS_ON = ("CONFIG_DETECT_SOFTLOCKUP", "CONFIG_DEBUG_BUGVERBOSE",
                            "CONFIG_FORCED_INLINING")


def debug_info_overrides(symbols: Mapping[str, str]) -> list[str]:
    """``--set`` overrides that add debug info to a config fragment (``symbols``: symbol -> value).

    A fragment that has ``DEBUG_KERNEL=y`` already (the debug configs) only
    gains ``DEBUG_INFO``; otherwise the symbols ``DEBUG_KERNEL`` would turn on
    are kept off, unless the fragment says something about them itself.
    """
    if symbols.get("CONFIG_DEBUG_KERNEL") == "y":
        return ["CONFIG_DEBUG_INFO=y"]
    return ["CONFIG_DEBUG_KERNEL=y", "CONFIG_DEBUG_INFO=y",
            *(f"{s}=n" for s in DEBUG_KERNEL_DEFAULTS_ON if s not in symbols)]
