"""Accuracy of the question-only flow as served: every question of a SQuAD v2 file (a pack's test split, the
customer-phrasing set) is sent to a running service WITHOUT contexts, so retrieval, the choice among passages, the
pack's calibration (its question-only threshold when it has one) and the rules all take part.

Each question is asked twice: as served (the service's own threshold) and with ``min_score: 0`` (the top span, to
tell reading from abstaining). Prints, per file: top-span EM/F1 over the answerable questions, served EM/F1 (an
abstention scores 0 on an answerable question), the share of answerable and of unanswerable questions abstained on,
overall SQuAD v2 F1 (an abstention scores 100 on an unanswerable question), how often the document the answer
pipeline read its top span from is the document the question was written against (many answers are also stated in
another document), and the same per ``style`` when the file labels its questions with one (the customer set does).
Starts the service itself on a free port, graph off.

With ``--fit FILE`` (the pack's dev split) it also chooses the question-only abstention threshold the way
``vqa calibrate`` chooses the pack's (best overall F1 within the two abstention limits, on the top answers' scores,
which the service already calibrates with the pack's temperature) and prints the dev numbers at it; with ``--save``
it stores it, when it meets both limits, as ``question_only_threshold`` in the pack's fit for the served model
version. Restart the service, or run this again, to use it.

    .venv/bin/python bench/eval_question_only.py packs/fintech/qa/test.json packs/fintech/qa/customer.json
    .venv/bin/python bench/eval_question_only.py --fit packs/fintech/qa/dev.json --save
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_question_only import start  # noqa: E402

from domain.calibration import PackCalibration  # noqa: E402
from training.abstention import QuestionOutcome, choose_threshold, served_report  # noqa: E402
from training.squad_metric import best_over_references  # noqa: E402


@dataclass(frozen=True)
class Asked:
    question: str
    answers: tuple[str, ...]  # empty: unanswerable
    style: str
    doc_id: str  # the document the question was written against


@dataclass
class Outcome:
    asked: Asked
    top_text: str
    top_score: float
    served_text: str | None  # None: abstained
    model: tuple[str, str]  # name, version
    top_doc: str | None  # document of the passage the top span was read from


def load(path: Path) -> list[Asked]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        Asked(
            qa["question"],
            tuple(dict.fromkeys(a["text"] for a in qa["answers"])),
            qa.get("style", ""),
            article["title"],
        )
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


async def ask_all(url: str, asked: list[Asked], clients: int) -> list[Outcome]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(asked)):
        queue.put_nowait(i)
    outcomes: list[Outcome | None] = [None] * len(asked)

    async def post(http: aiohttp.ClientSession, body: dict[str, object]) -> dict[str, object]:
        async with http.post(f"{url}/answer", json=body) as response:
            payload = await response.json()
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}: {payload}")
            return dict(payload)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            question = asked[i].question
            served = await post(http, {"question": question})
            top = await post(http, {"question": question, "min_score": 0})
            top_answers = top["answers"]
            served_answers = served["answers"]
            assert isinstance(top_answers, list) and isinstance(served_answers, list)
            model = top["model"]
            assert isinstance(model, dict)
            outcomes[i] = Outcome(
                asked[i],
                str(top_answers[0]["text"]) if top_answers else "",
                float(top_answers[0]["score"]) if top_answers else 0.0,
                None if served["abstained"] else str(served_answers[0]["text"]),
                (str(model["name"]), str(model["version"])),
                # Passage ids are "<document id>#<index>".
                str(top_answers[0]["context_id"]).rsplit("#", 1)[0] if top_answers else None,
            )

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return [o for o in outcomes if o is not None]


def summarise(outcomes: list[Outcome]) -> dict[str, float]:
    answerable = [o for o in outcomes if o.asked.answers]
    unanswerable = [o for o in outcomes if not o.asked.answers]
    top = [best_over_references(o.top_text, list(o.asked.answers)) for o in answerable]
    served = [
        best_over_references(o.served_text, list(o.asked.answers)) if o.served_text is not None else (0.0, 0.0)
        for o in answerable
    ]
    unanswerable_right = [100.0 if o.served_text is None else 0.0 for o in unanswerable]
    n_a = max(1, len(answerable))
    return {
        "questions": len(outcomes),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "top_em": 100 * sum(e for e, _ in top) / n_a,
        "top_f1": 100 * sum(f for _, f in top) / n_a,
        "answer_doc_at_1": 100 * sum(o.top_doc == o.asked.doc_id for o in answerable) / n_a,
        "served_em": 100 * sum(e for e, _ in served) / n_a,
        "served_f1": 100 * sum(f for _, f in served) / n_a,
        "answerable_abstained": 100 * sum(o.served_text is None for o in answerable) / n_a,
        "unanswerable_abstained": (sum(unanswerable_right) / len(unanswerable) if unanswerable else float("nan")),
        "overall_f1": (100 * sum(f for _, f in served) + sum(unanswerable_right)) / max(1, len(outcomes)),
    }


def fit_threshold(outcomes: list[Outcome], max_answerable: float, min_unanswerable: float) -> tuple[float, bool]:
    items = []
    for o in outcomes:
        em, f1 = best_over_references(o.top_text, list(o.asked.answers)) if o.asked.answers else (0.0, 0.0)
        items.append(QuestionOutcome(bool(o.asked.answers), o.top_score, em, f1))
    threshold, met = choose_threshold(items, max_answerable, min_unanswerable)
    report = served_report(items, threshold)
    print(
        f"question-only threshold {threshold:.4f} ({'meets' if met else 'closest to'} <= {max_answerable:g}% "
        f"answerable abstained and >= {min_unanswerable:g}% unanswerable abstained): {report.as_dict()}"
    )
    return threshold, met


def row(name: str, s: dict[str, float]) -> str:
    return (
        f"| {name} | {s['answerable']:.0f} / {s['unanswerable']:.0f} | {s['top_em']:.2f} / {s['top_f1']:.2f} | "
        f"{s['served_em']:.2f} / {s['served_f1']:.2f} | {s['answerable_abstained']:.1f}% | "
        f"{s['unanswerable_abstained']:.1f}% | {s['overall_f1']:.2f} | {s['answer_doc_at_1']:.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="*", help="SQuAD v2 files (e.g. packs/fintech/qa/test.json)")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the service's default)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--fit", type=Path, default=None, help="choose the question-only threshold on this file")
    parser.add_argument("--max-answerable-abstained", type=float, default=15.0)
    parser.add_argument("--min-unanswerable-abstained", type=float, default=80.0)
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "fintech")
    parser.add_argument("--save", action="store_true", help="store the --fit threshold in the pack's calibration")
    args = parser.parse_args()
    files = [*args.files, *([args.fit] if args.fit else [])]

    with tempfile.TemporaryDirectory(prefix="vqa-eval-qonly-") as tmp:
        env = {
            "VQA_KG_ENABLED": "false",
            "VQA_EMBEDDING_CACHE_DIR": str(Path(tmp) / "embeddings"),
            "VQA_STORE_PATH": str(Path(tmp) / "feedback.sqlite3"),
            "VQA_CANARY_INTERVAL_MIN": "0",
            "VQA_MODEL_REGISTRY": str(Path(tmp) / "registry.json"),
            "VQA_MAX_QUEUE_WINDOWS": "100000",  # an evaluation, not an overload test: nothing refused
        }
        if args.model is not None:
            env["VQA_MODEL_PATH"] = str(args.model.resolve())
        proc, url, _ = start(env, Path(tmp) / "service.log")
        try:
            results = {str(path): asyncio.run(ask_all(url, load(path), args.clients)) for path in files}
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)

    print(f"\nquestion only (no contexts), graph off, {os.cpu_count()} CPU cores")
    print(
        "| set | answerable / unanswerable | top-span EM / F1 | served EM / F1 | answerable abstained "
        "| unanswerable abstained | overall F1 (v2) | top span from the question's document |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summary: dict[str, dict[str, float]] = {}
    for path, outcomes in results.items():
        summary[path] = summarise(outcomes)
        print(row(Path(path).name, summary[path]))
        by_style: dict[str, list[Outcome]] = defaultdict(list)
        for o in outcomes:
            if o.asked.style:
                by_style[o.asked.style].append(o)
        for style, group in sorted(by_style.items()):
            summary[f"{path}:{style}"] = summarise(group)
            print(row(f"{Path(path).name}: {style}", summary[f"{path}:{style}"]))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if args.fit is not None:
        fitted = results[str(args.fit)]
        threshold, met = fit_threshold(fitted, args.max_answerable_abstained, args.min_unanswerable_abstained)
        if args.save and not met:
            # "closest to the limits" can cost more overall F1 than it buys (on the fintech dev split it did: 70.2
            # at the pack's threshold, 60.0 at the closest): the pack's threshold stays in force.
            print("not saved: no threshold meets both limits; the pack's threshold stays in force")
        elif args.save:
            path = args.pack / "calibration.json"
            calibration = PackCalibration.load(path)
            fit = calibration.for_model(*fitted[0].model)
            if fit is None:
                raise SystemExit(f"{path} has no fit for {fitted[0].model}: run vqa calibrate --pack first")
            updated = fit.model_copy(update={"question_only_threshold": round(threshold, 4)})
            calibration.with_fit(updated).save(path)
            print(f"saved question_only_threshold {threshold:.4f} for {fitted[0].model} in {path}")


if __name__ == "__main__":
    main()
