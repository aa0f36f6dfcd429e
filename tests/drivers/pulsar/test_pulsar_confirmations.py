"""A publish call's confirmations, counted on pulsar-client's threads without a lock
(``producer._Batch``): however the callbacks of several threads interleave, and whenever
the caller learns that fewer records were handed over, the batch completes once every
expected answer is in, with each refusal at its index."""

from __future__ import annotations

import asyncio
import threading

import pulsar

from hexa_event.drivers.pulsar.producer import _Batch

OK = pulsar.Result.Ok
TIMEOUT = pulsar.Result.Timeout


async def test_callbacks_from_many_threads_complete_the_batch_with_each_refusal() -> None:
    threads, each = 8, 2_000
    batch = _Batch(asyncio.get_running_loop(), threads * each)
    start = threading.Barrier(threads)

    def answer(first: int) -> None:
        start.wait()
        for index in range(first, threads * each, threads):
            batch.callback(index, TIMEOUT if index % 997 == 0 else OK, None)

    workers = [threading.Thread(target=answer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    async with asyncio.timeout(30):
        await batch.future
    for worker in workers:
        worker.join()
    assert sorted(batch.confirmed) == list(range(threads * each))
    assert batch.errors == {i: "Timeout" for i in range(0, threads * each, 997)}


async def test_fewer_handed_over_completes_on_their_answers_whichever_comes_first() -> None:
    loop = asyncio.get_running_loop()
    answered_first = _Batch(loop, 10)
    for index in range(4):
        await asyncio.to_thread(answered_first.callback, index, OK, None)
    assert not answered_first.future.done()
    answered_first.expect(4)  # all four already in
    assert answered_first.future.done()

    expected_first = _Batch(loop, 10)
    expected_first.expect(4)
    for index in range(4):
        await asyncio.to_thread(expected_first.callback, index, OK, None)
    async with asyncio.timeout(10):
        await expected_first.future
