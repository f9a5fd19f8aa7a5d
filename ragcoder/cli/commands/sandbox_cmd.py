"""``ragcoder sandbox build-image|status|reap``: the sandbox image, which backend runs, orphans."""

from __future__ import annotations

import click

from ragcoder.cli.options import fail
from ragcoder.sandbox.settings import DEFAULT_IMAGE


@click.group("sandbox")
def sandbox() -> None:
    """Build the sandbox image, show which backend runs code, remove orphaned containers."""


@sandbox.command("build-image")
@click.option("--force", is_flag=True, help="Rebuild even when the image exists.")
@click.option(
    "--tag",
    default=None,
    help=f"Image name to build [default: {DEFAULT_IMAGE}; with --profile, the profile's].",
)
@click.option(
    "--profile",
    type=click.Choice(["standard", "scientific"]),
    default="standard",
    show_default=True,
    help="scientific: numpy, pandas, matplotlib, scipy, scikit-learn, ... (wheels fetched by pip "
    "on this machine; the sandbox stays offline).",
)
def build_image_cmd(force: bool, tag: str | None, profile: str) -> None:
    """Build the sandbox image (Dockerfile when a registry answers, else offline with debootstrap),
    or a profile's image derived from it."""
    from ragcoder.errors import SandboxError
    from ragcoder.sandbox.image import build_image, image_exists

    if profile != "standard":
        from ragcoder.sandbox.images import build_derived_image
        from ragcoder.sandbox.profiles import profile_for

        chosen = profile_for(profile)
        try:
            info = build_derived_image(tag or chosen.tag, chosen.requirements, profile=profile, force=force)
        except SandboxError as exc:
            fail(exc)
        click.echo(
            f"{info.tag}: {info.size_bytes / 1e6:.0f} MB, {len(info.modules)} modules; "
            f"runs that import them use it automatically"
        )
        return
    tag = tag or DEFAULT_IMAGE
    if image_exists(tag) and not force:
        click.echo(f"{tag} already exists (use --force to rebuild)")
        return
    try:
        build_image(tag, force=force)
    except SandboxError as exc:
        fail(exc)
    click.echo(f"built {tag}")


@sandbox.command("status")
@click.option("--tag", default=DEFAULT_IMAGE, show_default=True, help="Image to look for.")
def status_cmd(tag: str) -> None:
    """Docker engine, image, and the backend that `--sandbox auto` picks."""
    from ragcoder.sandbox.factory import auto_backend
    from ragcoder.sandbox.image import engine_available, image_exists
    from ragcoder.sandbox.local_sandbox import bwrap_path

    engine = engine_available()
    click.echo(f"docker engine: {'answers' if engine else 'not answering'}")
    click.echo(f"image {tag}: {'built' if engine and image_exists(tag) else 'missing'}")
    click.echo(f"bubblewrap: {bwrap_path() or 'not installed'}")
    from ragcoder.sandbox.profiles import SCIENTIFIC

    click.echo(f"image {SCIENTIFIC.tag}: {'built' if engine and image_exists(SCIENTIFIC.tag) else 'missing'}")
    kind, reason = auto_backend(tag)
    click.echo(f"auto backend: {kind} ({reason})")


@sandbox.command("reap")
@click.option("--all", "everything", is_flag=True, help="Remove every ragcoder container, not only orphans.")
def reap_cmd(everything: bool) -> None:
    """Remove ragcoder containers whose owning process is gone."""
    from ragcoder.errors import SandboxError
    from ragcoder.sandbox.lifecycle import reap_orphans

    try:
        removed = reap_orphans(everything=everything)
    except SandboxError as exc:
        fail(exc)
    click.echo(f"removed {len(removed)} container(s)" + (f": {' '.join(removed)}" if removed else ""))
