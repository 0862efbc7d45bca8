"""Retries, the completion cache and schema checks, on the scripted backend."""

import json

import pytest

from harness.backends.cache import CachedBackend, CompletionCache
from harness.backends.scripted import ScriptedBackend
from harness.roles import Role
from harness.types import ChatMessage, ChatRequest

from .conftest import CRITERION_IDS, scripted_role, verdict_requests

VALID = json.dumps({cid: "yes" for cid in CRITERION_IDS})


def make_role(context, script, max_attempts=3, validate=True, cache=False):
    config = scripted_role(max_attempts=max_attempts)
    backend = ScriptedBackend("verifier", config, context, script=script, validate=validate)
    wrapped = (
        CachedBackend(backend, CompletionCache(context.cache_dir / "c.sqlite"))
        if cache
        else backend
    )
    return Role("verifier", config, wrapped), backend


def test_answers_are_parsed_against_the_schema(context):
    role, _ = make_role(context, [VALID])
    [completion] = role.generate(verdict_requests(1))
    assert completion.parsed == {cid: "yes" for cid in CRITERION_IDS}
    assert completion.ok


def test_a_failed_request_is_retried_with_a_new_seed(context):
    def flaky(request: ChatRequest):
        return None if request.attempt == 0 else VALID

    role, backend = make_role(context, flaky)
    [completion] = role.generate(verdict_requests(1))
    assert completion.ok
    assert [c.attempt for c in backend.calls] == [0, 1]
    assert backend.calls[0].effective_seed("m") != backend.calls[1].effective_seed("m")
    assert role.stats.retried == 1


def test_unparseable_answers_stay_failed_after_bounded_attempts(context):
    role, backend = make_role(context, ['{"c1": "maybe"}'], max_attempts=3, validate=False)
    [completion] = role.generate(verdict_requests(1))
    assert completion.parsed is None
    assert completion.error.startswith("unparseable")
    assert len(backend.calls) == 3
    assert role.stats.failed == 1


def test_scripted_backend_rejects_a_script_that_breaks_the_schema(context):
    role, _ = make_role(context, ['{"c1": "maybe"}'])
    with pytest.raises(Exception, match="maybe"):
        role.generate(verdict_requests(1))


def test_cache_answers_reruns_and_keys_on_sample_index(context):
    role, backend = make_role(context, lambda r: VALID, cache=True)
    requests = verdict_requests(3)
    role.generate(requests)
    again = role.generate(requests)
    assert len(backend.calls) == 3
    assert all(c.cached for c in again)
    role.generate([r.model_copy(update={"sample_index": 1}) for r in requests])
    assert len(backend.calls) == 6


def test_errors_are_never_cached(context):
    role, backend = make_role(context, lambda r: None, max_attempts=1, cache=True)
    role.generate(verdict_requests(2))
    role.generate(verdict_requests(2))
    assert len(backend.calls) == 4


def test_truncated_answers_are_never_cached(context):
    from harness.backends.cache import cache_key

    cache = CompletionCache(context.cache_dir / "t.sqlite")
    request = ChatRequest(messages=(ChatMessage(role="user", content="hi"),))
    from harness.types import Completion

    key = cache_key({}, request)
    cache.put_many([(key, Completion(text="cut", finish_reason="length"))])
    assert cache.get_many([key]) == {}
    cache.put_many([(key, Completion(text="whole"))])
    assert cache.get_many([key])[key].text == "whole"


def test_a_cache_opened_while_another_process_writes_it_waits_for_the_lock(tmp_path):
    """The ranks of one training run open the same cache file together: switching it to WAL
    needs an exclusive lock, for which SQLite's own busy timeout does not wait."""
    import sqlite3
    import threading

    path = tmp_path / "shared.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")  # another process about to write, as it creates the table
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    cache = CompletionCache(path)
    assert cache.get_many(["absent"]) == {}
    cache.close()
    other.close()


def test_mapping_script_answers_by_last_user_message(context):
    role, _ = make_role(context, {"ping": "pong"})
    request = ChatRequest(messages=(ChatMessage(role="user", content="ping"),))
    assert role.generate([request])[0].text == "pong"
