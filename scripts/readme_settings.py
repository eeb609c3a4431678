"""Rewrite README's settings tables from taskward.settings (tests/unit/test_settings.py checks them)."""

from __future__ import annotations

import re
from pathlib import Path

from taskward.settings import GATEWAY_SETTINGS, NODE_SETTINGS, markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    text = README.read_text()
    for kind, settings in (("node", NODE_SETTINGS), ("gateway", GATEWAY_SETTINGS)):
        pattern = re.compile(rf"(<!-- settings:{kind} [^\n]*\n).*?(<!-- /settings:{kind} -->)", re.S)
        text, n = pattern.subn(lambda m, s=settings: m.group(1) + markdown_table(s) + "\n" + m.group(2), text)
        if n != 1:
            raise SystemExit(f"README has no settings:{kind} block")
    README.write_text(text)


if __name__ == "__main__":
    main()
