"""Merging an engine's per-step chunks: nothing lost, the first at once, at most one per interval."""

import asyncio

from serving.chunks import chunk, coalesce, merge


def steps(n: int, logprobs: bool = False) -> list[dict]:
    return [chunk(f"t{i} ", 1, "length" if i == n - 1 else None,
                  [{"token": f"t{i}", "logprob": -0.5, "top": []}] if logprobs else None) for i in range(n)]


def test_merge_keeps_text_tokens_finish_and_logprobs_in_order():
    merged = merge(steps(4, logprobs=True))
    assert merged["text"] == "t0 t1 t2 t3 " and merged["new_tokens"] == 4 and merged["finish_reason"] == "length"
    assert [e["token"] for e in merged["logprobs"]] == ["t0", "t1", "t2", "t3"]
    assert merge(steps(3))["logprobs"] is None
    assert merge([]) == chunk("", 0, None)


async def collect(chunks: list[dict], interval: float, times: list[float]) -> list[dict]:
    async def source():
        for c in chunks:
            yield c

    clock = iter(times).__next__
    return [c async for c in coalesce(source(), interval, clock)]


def test_coalesce_sends_the_first_at_once_then_one_per_interval_and_the_last():
    # steps at t = 0, 0.01, …, 0.09: first alone; then every 0.05 s; the final step goes out at once
    out = asyncio.run(collect(steps(10), 0.05, [i / 100 for i in range(10)]))
    assert [c["new_tokens"] for c in out] == [1, 5, 4]
    assert merge(out) == merge(steps(10))
    assert out[-1]["finish_reason"] == "length" and all(c["finish_reason"] is None for c in out[:-1])


def test_coalesce_with_interval_zero_passes_every_chunk_on():
    chunks = steps(5)
    assert asyncio.run(collect(chunks, 0.0, [0.0] * 5)) == chunks


def test_coalesce_flushes_what_is_pending_when_the_stream_ends_without_a_finish():
    chunks = [chunk("a", 1, None), chunk("b", 1, None), chunk("c", 1, None)]
    out = asyncio.run(collect(chunks, 10.0, [0.0, 0.1, 0.2]))
    assert [c["text"] for c in out] == ["a", "bc"]
