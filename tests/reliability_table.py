"""Print the catalogues of tests/test_bad_inputs.py and of the hostile tests as Markdown tables (for
docs/RELIABILITY.md).

    python -m tests.reliability_table            # the bad-input catalogue
    python -m tests.reliability_table --hostile  # the hostile catalogues (repos and API requests)

The tests are the source: each row is one entry there, run by a test that asserts the error type, that the message
matches the pattern shown, and that the state is exactly as before.
"""

import sys
from collections import Counter

from tests.test_bad_inputs import IMAGES, TEXT
from tests.test_hostile_api import CASES
from tests.test_hostile_images import HOSTILE_IMAGES
from tests.test_hostile_text import HOSTILE


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    if "--hostile" in sys.argv[1:]:
        table([("Images", bad) for bad in HOSTILE_IMAGES] + [("Text", bad) for bad in HOSTILE])
        print(f"\nThe named API ({len(CASES)} entries, tests/test_hostile_api.py), each refused with a message "
              "containing:\n")
        print("| endpoint | arguments | the message contains |")
        print("|---|---|---|")
        for endpoint, arguments, message in CASES:
            print(f"| {endpoint} | `{_cell(repr(arguments))}` | {_cell(message)} |")
        return
    table([("Images", bad) for bad in IMAGES] + [("Text", bad) for bad in TEXT])


def table(rows) -> None:
    images = sum(side == "Images" for side, _ in rows)
    counts = Counter(bad.kind for _, bad in rows)
    print(f"{len(rows)} entries ({images} on the image side, {len(rows) - images} on the text side): "
          + ", ".join(f"{kind} {n}" for kind, n in counts.items()) + ".\n")
    print("| side | kind | bad input | error | the message matches |")
    print("|---|---|---|---|---|")
    for side, bad in rows:
        settings = f" ({', '.join(f'{k}={v}' for k, v in bad.env.items())})" if bad.env else ""
        print(f"| {side} | {bad.kind} | {_cell(bad.what)}{settings} | {bad.error.__name__} | `{_cell(bad.message)}` |")


if __name__ == "__main__":
    main()
