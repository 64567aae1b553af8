"""The canary: labelled questions answered through the serving path (the answer pipeline with a lease on the served
model: its batcher, its threshold, the pack's rules) and scored, so an accuracy drop shows on the dashboard before
customers report it: ``vqa_canary_f1{model_version,set}``.

Two sets: a fixed labelled file (``VQA_CANARY_SET``, default the pack's ``dev`` QA set, first
``VQA_CANARY_QUESTIONS``), run every ``VQA_CANARY_INTERVAL_MIN`` minutes and right after each model load; and
``feedback``, the newest verdicts turned into examples the way ``vqa feedback export`` does (corrections located
in their passage, wrong answers unanswerable), re-run whenever new feedback arrived (at most every
``VQA_CANARY_FEEDBACK_MIN_INTERVAL_S``), so it moves with what customers report.

The score is SQuAD v2 style (0-100): an answerable question scores the F1 of what was served (0 when the service
abstained), an unanswerable one scores 100 when the service abstained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.feedback import FeedbackDesk
from app.metrics import ServiceMetrics
from app.pipeline import AnswerPipeline, AnswerQuery, ContextIn
from app.qa.model_host import ModelHost, ServedModel
from training.feedback_export import build
from training.squad import Answer, QAExample, dataset_name, load_examples
from training.squad_metric import best_over_references

log = logging.getLogger(__name__)
FEEDBACK_SET = "feedback"


@dataclass(frozen=True, slots=True)
class CanaryScore:
    model_version: str
    set_name: str
    questions: int
    f1: float
    exact_match: float


async def score_served_model(
    pipeline: AnswerPipeline, served: ServedModel, examples: Sequence[QAExample]
) -> tuple[float, float]:
    """(F1, EM), 0-100, of what the service would answer on ``examples`` (one question at a time, with its context),
    answered by ``pipeline`` with ``served`` as canary traffic (not counted in the request metrics, not stored)."""
    f1_total = em_total = 0.0
    for example in examples:
        query = AnswerQuery(example.question, [ContextIn(example.context)], source="canary")
        result = (await pipeline.answer(query, served)).checked
        references = [a.text for a in example.answers]
        if example.is_impossible or not references:
            em = f1 = 1.0 if result.abstained else 0.0
        elif result.abstained or not result.answers:
            em = f1 = 0.0
        else:
            em, f1 = best_over_references(result.answers[0].text, references)
        f1_total += f1
        em_total += em
    n = max(len(examples), 1)
    return 100.0 * f1_total / n, 100.0 * em_total / n


class CanaryLoop:
    """Runs the canary sets on their schedules; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        host: ModelHost,
        pipeline: Callable[[], AnswerPipeline | None],
        desk: FeedbackDesk | None = None,
        labelled_set: Path | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.labelled_set = labelled_set
        self.metrics = metrics
        self.host = host
        self.pipeline = pipeline  # None until the service has built it (with the first model load)
        self.desk = desk
        self.tick_s = tick_s
        self.interval_s = settings.canary_interval_min * 60
        self._task: asyncio.Task[None] | None = None
        self.scores: dict[str, CanaryScore] = {}

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vqa-canary")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_set(self, set_name: str, examples: Sequence[QAExample]) -> CanaryScore | None:
        """Score the served model on one set and export it; None when no model is loaded or the set is empty."""
        pipeline = self.pipeline()
        if self.host.current is None or pipeline is None or not examples:
            return None
        async with self.host.lease() as served:
            f1, em = await score_served_model(pipeline, served, examples)
            score = CanaryScore(served.version, set_name, len(examples), f1, em)
        previous = self.scores.get(set_name)
        if previous is not None and previous.model_version != score.model_version:
            for family in (self.metrics.canary_f1, self.metrics.canary_exact_match):
                with contextlib.suppress(KeyError):  # the dashboard shows the version being served
                    family.remove(previous.model_version, set_name)
        self.metrics.canary_f1.labels(score.model_version, set_name).set(round(f1, 2))
        self.metrics.canary_exact_match.labels(score.model_version, set_name).set(round(em, 2))
        self.metrics.canary_last_run.set(time.time())
        self.metrics.canary_runs.labels("ok").inc()
        self.scores[set_name] = score
        log.info("canary %s on v%s: F1 %.1f, EM %.1f over %d questions", set_name, score.model_version, f1, em,
                 len(examples))  # fmt: skip
        return score

    async def feedback_examples(self) -> list[QAExample]:
        """The newest verdicts as labelled examples (deduplicated, newest first kept)."""
        if self.desk is None or self.settings.canary_feedback_questions == 0:
            return []
        rows = await self.desk.newest_feedback(self.settings.canary_feedback_questions)
        train, holdout, _ = build(reversed(rows), holdout_share=0.0)
        return [
            QAExample(
                id=e.id,
                question=e.question,
                context=e.context,
                answers=(Answer(e.answer_text, e.answer_start),)
                if e.answer_text and e.answer_start is not None
                else (),
                is_impossible=e.is_impossible,
            )
            for e in train + holdout
        ]

    async def _guarded(self, set_name: str, examples: Sequence[QAExample]) -> None:
        try:
            await self.run_set(set_name, examples)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.canary_runs.labels("failed").inc()
            log.warning("canary %s failed: %s: %s", set_name, type(exc).__name__, exc)

    async def _run(self) -> None:
        fixed: list[QAExample] = []
        fixed_name = ""
        if self.labelled_set is not None:
            try:
                fixed = await asyncio.to_thread(load_examples, self.labelled_set, self.settings.canary_questions)
                fixed_name = dataset_name(self.labelled_set)
            except Exception:
                self.metrics.canary_runs.labels("failed").inc()
                log.exception("canary set %s cannot be read; only the feedback set runs", self.labelled_set)
        last_run = last_feedback_run = float("-inf")
        tried_version: str | None = None
        feedback_seen = -1
        while True:
            served = self.host.current
            now = time.monotonic()
            if served is not None:
                changed = served.version != tried_version
                if changed or now - last_run >= self.interval_s:
                    tried_version, last_run = served.version, now
                    if fixed:
                        await self._guarded(fixed_name, fixed)
                    feedback_seen = -1  # the feedback set runs too
                received = self.desk.received if self.desk is not None else 0
                quiet_s = now - last_feedback_run
                if received != feedback_seen and quiet_s >= self.settings.canary_feedback_min_interval_s:
                    feedback_seen, last_feedback_run = received, now
                    await self._guarded(FEEDBACK_SET, await self.feedback_examples())
            await asyncio.sleep(self.tick_s)
