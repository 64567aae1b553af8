"""ModelHost: a swap never fails a request in flight; the old batcher closes only after its last request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.qa.batcher import WindowBatcher
from app.qa.card import ModelCard
from app.qa.model_host import ModelHost, ReloadInProgressError, ServedModel
from app.qa.reader import Reader, WindowJob, WindowPrediction
from app.qa.windows import Window


class StubReader(Reader):
    """A Reader that is never loaded: only its card (name/version) is used by the host."""

    def __init__(self, version: str) -> None:
        super().__init__(Path(version))
        self.card = ModelCard(name="stub", version=version)


def _job() -> WindowJob:
    return WindowJob(Window([1, 2, 3], None, [(0, 0)] * 3, 0, 1, 3))


async def _served(version: str, delay_s: float = 0.0) -> ServedModel:
    def run(jobs: list[WindowJob]) -> list[WindowPrediction]:
        import time

        time.sleep(delay_s)
        return [WindowPrediction([(0.0, 1, 1)], 0.0) for _ in jobs]

    batcher = WindowBatcher(run, max_batch_windows=4, max_wait_ms=1)  # type: ignore[arg-type]
    batcher.start()
    return ServedModel(StubReader(version), batcher, Path(version))


def test_a_swap_waits_for_requests_on_the_old_model_and_new_requests_get_the_new_one() -> None:
    async def scenario() -> None:
        versions = iter(["v1", "v2"])
        host = ModelHost(lambda path: _served(next(versions), delay_s=0.05), lambda: Path("x"))
        await host.load(Path("x"))
        old = host.current
        assert old is not None
        seen: list[str] = []

        async def request() -> None:
            async with host.lease() as served:
                await asyncio.sleep(0.1)  # tokenising, queueing ...
                await served.batcher.submit([_job()], timeout_s=5)  # the old batcher must still take it
                seen.append(served.version)

        in_flight = [asyncio.create_task(request()) for _ in range(5)]
        await asyncio.sleep(0.01)
        swap = asyncio.create_task(host.reload())
        await asyncio.sleep(0.01)
        with pytest.raises(ReloadInProgressError):
            await host.reload()
        result = await swap
        await asyncio.gather(*in_flight)
        assert result.drained and result.previous is old and old.leases == 0
        assert seen == ["v1"] * 5, "requests that started on v1 finished on v1"
        async with host.lease() as served:
            assert served.version == "v2"
            await served.batcher.submit([_job()], timeout_s=5)
        await host.close()

    asyncio.run(scenario())


def test_a_failed_load_keeps_the_current_model() -> None:
    async def scenario() -> None:
        calls = 0

        async def build(path: Path) -> ServedModel:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("broken checkpoint")
            return await _served("v1")

        host = ModelHost(build, lambda: Path("x"))
        await host.load(Path("x"))
        with pytest.raises(RuntimeError):
            await host.reload()
        assert host.current is not None and host.current.version == "v1"
        async with host.lease() as served:
            await served.batcher.submit([_job()], timeout_s=5)
        await host.close()

    asyncio.run(scenario())
