"""Commands for the kernel and the guest image: build, image, import-patch, configs, series, doctor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import add_kernel_args, kernel_spec
from harness.errors import HarnessError, InputError


def cmd_build(args: argparse.Namespace) -> int:
    from harness.run import target

    result = target.build_kernel(kernel_spec(args), jobs=args.jobs, force=args.force)
    state = "cached" if result.cached else f"built in {result.duration:.1f}s"
    print(f"harness: {state}, {result.warnings} warnings; metadata {result.meta_path}",
          file=sys.stderr)
    print(result.bzimage)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from harness import image

    img = image.build_image(image.resolve_recipe(args.recipe), force=args.force)
    print(f"harness: image {img.recipe_name} ({img.recipe_hash}), "
          f"{'cached' if img.cached else 'built'}; keys in {img.directory / 'keys'}", file=sys.stderr)
    print(img.initramfs)
    return 0


def cmd_import_patch(args: argparse.Namespace) -> int:
    from harness.kernel import importer, source

    path = Path(args.file)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); expected a patch or email text") from None
    against: Path | None = None
    if args.against:
        against = Path(args.against)
        if not against.is_dir():
            against = source.resolve(args.against).tree
    elif not args.no_tree:
        try:
            against = source.resolve(None, allow_download=False).tree
        except HarnessError:
            against = None
    result = importer.import_patch(text, against=against)
    for warning in result.warnings:
        print(f"harness: import: {warning}", file=sys.stderr)
    if against is None:
        print("harness: import: no source tree: context whitespace not restored "
              "(give --against SRC)", file=sys.stderr)
    rendered = result.render()
    if args.output:
        Path(args.output).write_text(rendered)
        print(f"harness: wrote {args.output} ({len(result.files)} files)", file=sys.stderr)
    else:
        sys.stdout.write(rendered)
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from harness.kernel import config

    for name, definition in sorted(config.load_defs().items()):
        print(f"{name:12} {definition.description}")
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    from harness.kernel import patches

    if args.name:
        series = patches.load_series(args.name)
        print(f"{series.name}: {' -> '.join(series.chain)}")
        for patch in series.patches:
            print(f"  {patch.series}/{patch.name}  {patch.subject}", flush=True)
        return 0
    for name in patches.available():
        series = patches.load_series(name)
        base = " -> ".join(series.chain[:-1]) or "(pristine)"
        print(f"{name:14} {len(series.own_patches())} patches, on {base}")
    return 0


def cmd_source(args: argparse.Namespace) -> int:
    from harness.kernel import source

    src = source.resolve(args.kernel_src, allow_download=not args.no_download)
    print(f"harness: {src.origin} (id {src.id})", file=sys.stderr)
    print(src.tree)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness import doctor

    return doctor.run(do_install=args.install)


def register(sub: Any) -> None:
    """Add this module's commands to the parser's subcommands."""
    p = sub.add_parser("build", help="build a kernel (cached) and print the bzImage path")
    add_kernel_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("image", help="build the guest initramfs (cached) and print its path")
    p.add_argument("--recipe", default="default", help="image recipe name or path (default: default)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("import-patch", help="recover a clean diff from a quoted email/web archive")
    p.add_argument("file", help="the email or archive text")
    p.add_argument("-o", "--output", help="write the patch here (default: stdout)")
    p.add_argument("--against", metavar="SRC",
                   help="pristine tree (or any --kernel-src value) to restore context from")
    p.add_argument("--no-tree", action="store_true", help="do not look for a cached tree")
    p.set_defaults(func=cmd_import_patch)

    p = sub.add_parser("configs", help="list the named kernel configs")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("series", help="list patch series, or the patches of one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_series)

    p = sub.add_parser("source", help="resolve the kernel source and print the pristine tree")
    p.add_argument("--kernel-src", default=None, metavar="SRC")
    p.add_argument("--no-download", action="store_true")
    p.set_defaults(func=cmd_source)

    p = sub.add_parser("doctor", help="check (and with --install, install) what the harness needs")
    p.add_argument("--install", action="store_true", help="install missing Debian packages (root)")
    p.set_defaults(func=cmd_doctor)
