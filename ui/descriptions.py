"""An adapter card's one-line description, read from its repo's model card (README.md) where it is on disk already.

The card is written by whoever published the repo: only its first prose line is taken, cut to DESCRIPTION_CHARS,
with markup (links, emphasis, HTML) flattened and every character Markdown gives meaning to escaped, so it shows
as the text it is. Nothing is downloaded: a bundled repo or an allowed local folder is read from its folder, a Hub
repo only from the Hub cache (where the load put its card).
"""

from functools import lru_cache
from pathlib import Path

from peft_core import hub
from peft_core.errors import StudioError
from peft_core.image.lora_report import LoadReport

DESCRIPTION_CHARS = 140
_MARKUP = set("\\`*_{}[]()<>#+-.!|~")
# The Hub's model card template (which peft's save_pretrained writes too) fills every field with this placeholder
# ("- **Developed by:** [More Information Needed]"). A card still holding it is the unfilled template: its prose is
# boilerplate ("Users (both direct and downstream) should be made aware of the risks..."), not a description.
TEMPLATE_PLACEHOLDER = "more information needed"


def _card_path(repo_id: str, revision: str) -> Path | None:
    try:
        repo = hub.open_repo(repo_id, revision)
    except StudioError:  # no longer allowed (settings changed): no description
        return None
    if repo.local_dir is not None:
        path = repo.local_dir / "README.md"
        return path if path.is_file() and not path.is_symlink() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo.repo_id, "README.md", revision=repo.revision)
    return Path(found) if isinstance(found, str) else None


def first_line(card: str) -> str:
    """The first line of prose after the YAML header: not a heading, a picture, a badge, HTML or a table; "" for
    the unfilled Hub template."""
    if TEMPLATE_PLACEHOLDER in card.lower():
        return ""
    lines = card.splitlines()
    if lines and lines[0].strip() == "---":  # skip the metadata block
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), len(lines))
        lines = lines[end + 1 :]
    for line in lines:
        line = line.strip()
        if line and not line.startswith(("#", "!", "<", "|", "[!", "```", "---", ">")):
            return line
    return ""


def flatten(line: str) -> str:
    """Markdown links as their text, markup characters escaped, cut to DESCRIPTION_CHARS."""
    out, i = [], 0
    while i < len(line):  # "[text](url)" -> "text": one pass, no pattern made from the card
        if line[i] == "]" and line[i + 1 : i + 2] == "(":
            close = line.find(")", i)
            i = close + 1 if close != -1 else len(line)
            continue
        if line[i] not in "[]*_`":  # a "]" not opening a link's "(...)": a bracket of "[text]"
            out.append(line[i])
        i += 1
    text = " ".join("".join(out).split())
    if len(text) > DESCRIPTION_CHARS:
        text = text[: DESCRIPTION_CHARS - 1].rstrip() + "…"
    return escape(text)


def escape(text: str) -> str:
    """`text` as Markdown that shows it as it is: markup characters backslash-escaped, unprintables dropped."""
    return "".join("\\" + c if c in _MARKUP else c for c in text if c.isprintable())


def report_line(report: dict) -> str:
    """The load report's line (layout; layers registered/named; made for; base), escaped: it names keys of the
    file."""
    if not report:
        return ""
    try:
        return escape(LoadReport(**report).line())
    except TypeError:  # a report of another shape: nothing rather than a broken card
        return ""


@lru_cache(maxsize=256)
def description(repo_id: str, revision: str) -> str:
    """The card's first prose line, Markdown-escaped, or "" when there is no card on disk (or it is too big)."""
    path = _card_path(repo_id, revision)
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            raw = f.read(hub.MAX_CARD_BYTES + 1)
    except OSError:
        return ""
    if len(raw) > hub.MAX_CARD_BYTES:
        return ""
    return flatten(first_line(raw.decode("utf-8", errors="replace")))
