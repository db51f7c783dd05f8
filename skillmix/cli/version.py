"""``skillmix version``: what is running, for bug reports and for checking an image."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import click

from skillmix import __version__, settings
from skillmix.cli._output import echo_json, format_option

# The dependencies whose versions change behaviour that users see (API clients, the store, the
# Kubernetes client, validation); the full list is docker/requirements.lock.
KEY_PACKAGES = ("openai", "aiohttp", "boto3", "kubernetes", "pydantic", "click", "matplotlib")


def version_info() -> dict[str, object]:
    packages: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "skillmix": __version__,
        "revision": settings.REVISION.raw() or None,
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "packages": packages,
    }


@click.command("version")
@format_option()
def version_cmd(fmt: str) -> None:
    """Print skillmix's version, the image's git revision, Python and key package versions."""
    info = version_info()
    if fmt == "json":
        echo_json(info)
        return
    click.echo(f"skillmix {info['skillmix']}")
    click.echo(f"revision {info['revision'] or 'unknown (not built as the image)'}")
    click.echo(f"python   {info['python']} ({info['platform']})")
    packages = info["packages"]
    assert isinstance(packages, dict)
    for name, version in packages.items():
        click.echo(f"{name:<10} {version or 'not installed'}")
