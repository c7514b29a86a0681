"""The documents that describe the tree keep up with it: the README's layout section names
every top-level folder and nothing that is gone, its Settings tables every variable a
service reads, its rule-kind examples load as rules, and docs/architecture.md covers every
package the import-linter contracts govern."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Final

import msgspec
import pytest
from pydantic_settings import BaseSettings

from common.kafka_settings import KafkaSettings
from common.rule_model import RULE_KINDS, Rule, check_rules
from common.settings import (
    DetectorSettings,
    GatewaySettings,
    IngestorSettings,
    NotifierSettings,
)

REPO: Final = Path(__file__).resolve().parents[1]
README: Final = REPO / "README.md"
ARCHITECTURE: Final = REPO / "docs" / "architecture.md"


def layout_entries() -> set[str]:
    """The folders in the first column of the README's layout block."""
    section = README.read_text().split("\n## Layout\n", 1)[1]
    block = section.split("```", 2)[1]
    entries: set[str] = set()
    for line in block.splitlines():
        if line and not line.startswith(" "):
            first_column = re.split(r"\s{2,}", line.strip())[0]
            entries |= {name.strip() for name in first_column.split(",")}
    return entries


def tracked_folders() -> set[str]:
    """Top-level folders of the repository as git has them, with a slash, as in the README."""
    git = shutil.which("git")
    assert git is not None, "git is needed to list the tracked files"
    files = subprocess.run([git, "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True, timeout=30).stdout.splitlines()
    return {f"{path.split('/', 1)[0]}/" for path in files if "/" in path}


def test_the_readme_layout_names_every_top_level_folder() -> None:
    entries = layout_entries()
    assert tracked_folders() - entries == set()


def test_every_folder_of_the_readme_layout_exists() -> None:
    missing = [entry for entry in layout_entries() if not (REPO / entry).is_dir()]
    assert missing == []


def test_the_architecture_covers_every_package_of_the_layer_contracts() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    text = ARCHITECTURE.read_text()
    assert [p for p in config["root_packages"] if f"`{p}/`" not in text] == []
    assert "[tool.importlinter]" in text


@pytest.mark.parametrize("settings", [IngestorSettings, DetectorSettings, GatewaySettings,
                                      NotifierSettings, KafkaSettings])
def test_the_readme_settings_tables_name_every_variable(settings: type[BaseSettings]) -> None:
    """A row's first column names one variable or several (`READ_COUNT` / `READ_BLOCK_MS`)."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    first_columns = [line.split("|")[1] for line in section.splitlines()
                     if line.startswith("| `")]
    names = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", "\n".join(first_columns)))
    prefix = str(settings.model_config.get("env_prefix") or "")
    variables = {(prefix + field).upper() for field in settings.model_fields}
    assert variables - names == set()


def test_the_readme_rule_kind_examples_are_one_valid_rule_set_of_every_kind() -> None:
    """What the "Rule kinds" section shows loads as it says, through the rule model."""
    section = README.read_text().split("\n## Rule kinds\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
    rules = [msgspec.json.decode(block, type=Rule) for block in blocks]
    check_rules(rules)
    assert [rule.kind for rule in rules] == list(RULE_KINDS)
