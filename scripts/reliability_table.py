"""Print the catalogue of bad inputs in tests/test_bad_inputs.py as a Markdown table (for docs/RELIABILITY.md).

    python scripts/reliability_table.py > /tmp/table.md

The tests are the source: each row is one entry there, run by test_image_bad_input / test_text_bad_input, which
assert the error type, that the message matches the pattern shown, and that the state is exactly as before.
"""

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_bad_inputs import IMAGES, TEXT  # noqa: E402


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    rows = [("Images", bad) for bad in IMAGES] + [("Text", bad) for bad in TEXT]
    counts = Counter(bad.kind for _, bad in rows)
    print(f"{len(rows)} entries ({len(IMAGES)} on the image side, {len(TEXT)} on the text side): "
          + ", ".join(f"{kind} {n}" for kind, n in counts.items()) + ".\n")
    print("| side | kind | bad input | error | the message matches |")
    print("|---|---|---|---|---|")
    for side, bad in rows:
        settings = f" ({', '.join(f'{k}={v}' for k, v in bad.env.items())})" if bad.env else ""
        print(f"| {side} | {bad.kind} | {_cell(bad.what)}{settings} | {bad.error.__name__} | `{_cell(bad.message)}` |")


if __name__ == "__main__":
    main()
