"""Load and fill the templates in `prompts/`: `NAME.system.j2` (optional) and `NAME.user.j2`
become the system and user messages of a chat request. Templates may use the `one_line`
filter (a multi-line text as one line).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.project import PROJECT_ROOT
from harness.types import ChatMessage

PROMPTS_DIR = PROJECT_ROOT / "prompts"


@lru_cache(maxsize=8)
def _environment(folder: str):  # -> jinja2.Environment
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )
    environment.filters["one_line"] = one_line
    return environment


def one_line(text: str) -> str:
    """A text of several lines as one (a criterion a clinician wrote with line breaks), so
    that a list of criteria keeps one criterion per line; a one-line text is left as it is."""
    if "\n" not in text and "\r" not in text:
        return text
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def render(name: str, folder: Path = PROMPTS_DIR, **variables: Any) -> tuple[ChatMessage, ...]:
    """The messages of template `name` filled with `variables` (a missing one is an error)."""
    environment = _environment(str(folder))
    messages = []
    if (folder / f"{name}.system.j2").is_file():
        system = environment.get_template(f"{name}.system.j2").render(**variables)
        messages.append(ChatMessage(role="system", content=system.strip()))
    user = environment.get_template(f"{name}.user.j2").render(**variables)
    messages.append(ChatMessage(role="user", content=user.strip()))
    return tuple(messages)
