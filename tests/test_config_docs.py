"""docs/configuration.md is the Settings class, generated, complete and up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from openclaw.config_docs import COMMAND, DOCUMENT, render, sections, settings_reference
from openclaw.settings import Settings
from openclaw.testing.cli import invoke

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = (ROOT / DOCUMENT).read_text()
    assert committed == settings_reference(), (
        f"{DOCUMENT} differs from the Settings class: run `.venv/bin/{COMMAND}` and commit it"
    )


def test_every_setting_appears_with_its_variable_and_default() -> None:
    text = (ROOT / DOCUMENT).read_text()
    rows = {
        line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")
    }
    for name, info in Settings.model_fields.items():
        env = f"OPENCLAW_{name.upper()}"
        assert f"`{env}`" in rows, f"{env} is missing from {DOCUMENT}"
        row = rows[f"`{env}`"]
        assert f"`{name}`" in row
        default = info.get_default(call_default_factory=True)
        if default is None:
            assert "| unset |" in row, row
        elif isinstance(default, bool):
            assert f"`{str(default).lower()}`" in row, row
    assert len(rows) == len(Settings.model_fields)


def test_every_setting_says_what_it_does() -> None:
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    assert not missing, f"give these Settings fields a description=...: {missing}"


def test_the_command_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    code, stdout, _ = invoke("config", "docs", "--out", str(out))
    assert code == 0
    assert str(out) in stdout
    assert out.read_text() == settings_reference()
    code, stdout, _ = invoke("config", "docs")
    assert code == 0
    assert stdout == settings_reference()


def test_an_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    code, _, stderr = invoke("config", "docs", "--out", str(tmp_path / "no" / "such" / "dir.md"))
    assert code == 2
    assert "openclaw config docs:" in stderr
    assert "dir.md" in stderr


class Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EX_")

    plain: str = Field(default="a|b", description="A pipe | in a cell.")

    # -- the second part (of the class) -----------------------------------
    port: int = Field(default=80, ge=1, le=65535, description="Port.")
    ratio: float = Field(default=0.5, gt=0, lt=1, allow_inf_nan=False, description="Share.")
    mode: Literal["fast", "safe"] = Field(default="safe", description="Mode.")
    token: SecretStr | None = Field(default=None, description="Secret.")
    widths: tuple[int, ...] = Field(default=(64, 64), description="Widths.")
    name: str = Field(default="x", min_length=1, pattern=r"^[a-z]+$", description="Name.")
    flag: bool = Field(default=True, description="Flag.")


def test_sections_follow_the_comments_and_fields_keep_their_order() -> None:
    got = sections(Example)
    assert [s.title for s in got] == ["General", "The second part (of the class)"]
    assert [s.name for s in got[0].settings] == ["plain"]
    assert [s.name for s in got[1].settings] == [
        "port",
        "ratio",
        "mode",
        "token",
        "widths",
        "name",
        "flag",
    ]
    assert got[1].anchor == "the-second-part-of-the-class"


def test_types_defaults_and_constraints_are_spelled_for_the_environment() -> None:
    docs = {s.name: s for section in sections(Example) for s in section.settings}
    assert docs["port"].env == "EX_PORT"
    assert (docs["port"].type, docs["port"].default) == ("integer", "`80`")
    assert docs["port"].constraints == ">= 1, <= 65535"
    assert docs["ratio"].constraints == "> 0, < 1, finite"
    assert docs["mode"].type == "one of `fast`, `safe`"
    assert (docs["token"].type, docs["token"].default) == ("secret string, optional", "unset")
    assert (docs["widths"].type, docs["widths"].default) == ("list of integer (JSON)", "`[64, 64]`")
    assert docs["name"].constraints == "length >= 1, matches `^[a-z]+$`"
    assert docs["flag"].default == "`true`"
    table_row = next(line for line in render(Example).splitlines() if "`EX_PLAIN`" in line)
    assert "a\\|b" in table_row
    assert "A pipe \\| in a cell." in table_row
    assert table_row.count(" | ") == 5  # six cells: the escaped pipes did not add any
