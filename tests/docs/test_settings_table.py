"""docs/service.md's settings table is the settings themselves: every field, its default, its
flag where it has one, its description. Regenerate it with
``python -m tests.docs.test_settings_table`` after changing ``service/settings.py``."""

from __future__ import annotations

import re
from pathlib import Path

from service.__main__ import OPTIONS
from service.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "service.md"
START, END = "<!-- settings-table -->", "<!-- /settings-table -->"


def render() -> str:
    flags = {name: flag for flag, name in OPTIONS.items()}
    rows = ["| variable | flag | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(str(v) for v in default) or "(none)"
        meaning = (field.description or "").replace("|", "\\|")
        flag = f"`{flags[name]}`" if name in flags else ""
        rows.append(f"| `VISOR_{name.upper()}` | {flag} | `{default}` | {meaning} |")
    return "\n".join(rows)


def documented() -> str:
    text = DOC.read_text()
    return text[text.index(START) + len(START) : text.index(END)].strip()


def test_the_settings_table_lists_every_setting_as_it_is() -> None:
    assert documented() == render(), "run: python -m tests.docs.test_settings_table"


def test_only_some_settings_are_flags() -> None:
    assert 0 < len(OPTIONS) < len(Settings.model_fields)
    assert re.search(r"\| `VISOR_MODELS` \| `--models` \|", render())


if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    DOC.write_text(f"{head}{START}\n{render()}\n{END}{rest.split(END, 1)[1]}")
