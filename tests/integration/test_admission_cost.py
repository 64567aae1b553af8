"""Admission control starts every served model from its own measured speed: at start-up and again on each reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path

from app.config import Settings
from app.main import build_served_model
from app.metrics import ServiceMetrics
from app.qa.model_host import ModelHost, ServedModel
from app.qa.reader import Reader, WindowJob, WindowPrediction
from domain.pack import DomainPack

SLOW_S_PER_TOKEN = 4e-4


class SlowReader(Reader):
    """The tiny model made as slow per token as a much larger one."""

    def forward(self, jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        time.sleep(SLOW_S_PER_TOKEN * sum(len(job.window) for job in jobs))
        return super().forward(jobs)


def test_a_reload_measures_the_new_models_cost_instead_of_keeping_the_old_one(tiny_model_dir: Path) -> None:
    settings = Settings(model_path=tiny_model_dir, cpu_threads=1)
    pack = DomainPack.load(settings.pack)
    metrics = ServiceMetrics()
    readers = iter([Reader, SlowReader])

    def factory(s: Settings) -> Reader:
        return next(readers)(s.model_path, device="cpu", num_threads=1)

    async def scenario() -> tuple[float, float, float]:
        def build(path: Path) -> Awaitable[ServedModel]:
            return build_served_model(path, settings, metrics, factory, pack)

        host = ModelHost(build, lambda: tiny_model_dir)
        try:
            first = (await host.load(tiny_model_dir)).current.batcher
            fast = first.seconds_per_token
            slow = (await host.load(tiny_model_dir)).current.batcher.seconds_per_token
            return fast, slow, first.seconds_per_token
        finally:
            await host.close()

    fast, slow, first_after_reload = asyncio.run(scenario())
    # The batcher's default seed (1 ms a token) would be neither: each figure is a measurement of its own model.
    assert fast < SLOW_S_PER_TOKEN / 4, fast
    assert SLOW_S_PER_TOKEN <= slow < 1e-3, slow
    assert first_after_reload == fast, "the old model's estimate is its own, untouched by the new one's"
