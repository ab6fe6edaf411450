"""The Hub-style repos that ship with the project, resolved offline.

`assets/hub/<org>/<name>/` holds one repo each: a model card (README.md) and safetensors weights, laid out
exactly as on the Hub, so the same code reads a bundled repo and a downloaded snapshot.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "hub"
BUNDLED_ORG = "adapter-studio"
# The bundled defaults the app opens with; an admin picks others with STUDIO_DEFAULT_PIPELINE and
# STUDIO_DEFAULT_TEXT_MODEL (settings.py: `settings.current().default_pipeline`, `.default_text_model`).
BUNDLED_PIPELINE = f"{BUNDLED_ORG}/tiny-shapes"
DEFAULT_IMAGE_ADAPTERS = ("shapes-night", "shapes-outline", "shapes-stripes", "shapes-pastel")
BUNDLED_TEXT_MODEL = f"{BUNDLED_ORG}/tiny-shapes-lm"
DEFAULT_TEXT_ADAPTERS = ("lm-pirate", "lm-formal", "lm-shouting")
# Bundled repos have no git history: only this revision exists for them.
BUNDLED_REVISION = "main"


def bundled_path(repo_id: str) -> Path | None:
    """The folder of a bundled repo, or None when `repo_id` is not bundled (then it is a Hub id)."""
    org, _, name = repo_id.partition("/")
    if not name or "/" in name or name.startswith(".") or org.startswith("."):
        return None
    path = ASSETS_DIR / org / name
    return path if path.is_dir() else None


def bundled_repos() -> list[str]:
    """Every bundled repo id, sorted."""
    if not ASSETS_DIR.is_dir():
        return []
    return sorted(f"{org.name}/{repo.name}" for org in ASSETS_DIR.iterdir() if org.is_dir() for repo in org.iterdir())
