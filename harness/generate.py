"""Send a JSONL file of chat requests to any role and write the completions.

Each input line is a request: `messages` (a list of `{role, content}`) or `prompt` (a string),
and optionally `id`, `json_schema`, `schema_name`, `sample_index` and `sampling` (merged over
the role's sampling settings). Each output line carries the request's id, sample index, the
text, the parsed object when a schema was given, token counts, finish reason and error.

    harness generate --role verifier --input requests.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import HarnessConfig
from harness.jsonl import InputError, check_writable, read_records, write_records
from harness.types import ChatRequest, Completion, Sampling


@dataclass(frozen=True)
class GenerateResult:
    output_path: Path
    num_requests: int
    num_failed: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cache_hits: int


def load_requests(path: Path, sampling: Sampling, num_samples: int = 1) -> list[ChatRequest]:
    """Read requests (errors name file, line and field); each is repeated `num_samples` times."""

    def prepare(line: dict[str, Any]) -> dict[str, Any]:
        line = dict(line)
        if "prompt" in line:
            prompt = line.pop("prompt")
            if "messages" in line:
                raise ValueError("give either 'prompt' or 'messages', not both")
            if not isinstance(prompt, str):
                raise ValueError("prompt: expected a string")
            line["messages"] = [{"role": "user", "content": prompt}]
        if isinstance(line.get("sampling", {}), dict):
            line["sampling"] = {**sampling.model_dump(), **line.get("sampling", {})}
        if isinstance(line.get("json_schema"), dict):
            check_schema(line["json_schema"])
        return line

    requests = read_records(path, ChatRequest, prepare)
    if not requests:
        raise InputError(f"{path}: no requests in this file")
    return [
        r.model_copy(update={"sample_index": r.sample_index + k, "id": r.id or f"line{n + 1}"})
        for n, r in enumerate(requests)
        for k in range(num_samples)
    ]


def check_schema(schema: dict[str, Any]) -> None:
    """A schema must be a valid JSON Schema here, not 3 minutes later inside an engine."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at {where}" if where else ""
        raise ValueError(f"json_schema: not a valid JSON Schema{at}: {exc.message}") from None


def output_row(request: ChatRequest, completion: Completion) -> dict[str, Any]:
    return {
        "id": request.id,
        "sample_index": request.sample_index,
        **completion.model_dump(
            mode="json", exclude={"logprobs"} if completion.logprobs is None else set()
        ),
    }


def generate_file(
    config: HarnessConfig,
    role_name: str,
    input_path: Path,
    output_path: Path | None = None,
    num_samples: int = 1,
) -> GenerateResult:
    from harness.roles import open_role, run_context

    role_config = config.roles.get(role_name)
    requests = load_requests(input_path, role_config.sampling, num_samples)
    output_path = output_path or config.run_dir / "generate" / f"{role_name}.jsonl"
    check_writable(output_path)
    with open_role(role_name, role_config, run_context(config)) as role:
        completions = role.generate(requests)
        stats = role.stats
        hits = getattr(role.backend, "hits", 0)
    write_records(output_path, (output_row(r, c) for r, c in zip(requests, completions)))
    return GenerateResult(
        output_path=output_path,
        num_requests=len(requests),
        num_failed=stats.failed,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        seconds=stats.seconds,
        cache_hits=hits,
    )
