"""The reference: transformers 4.x ``pipeline("question-answering")`` on the same checkpoint, in fp32.

Runs inside the reference virtual environment that ``bench_answer.py`` creates (torch + transformers<5; this
project's own package is not installed there), so it imports nothing from the project. Reads questions as JSON
(``[{"id", "question", "context"}]``), answers them at each batch size and prints one JSON object to stdout:
versions, and per batch size the wall time, the latency of each pipeline call and the predictions.

The checkpoint is stored in fp16; ``torch_dtype=torch.float32`` is given explicitly because the 4.x pipeline would
otherwise run it in fp16, about 5x slower on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--questions", required=True, help="JSON file of {id, question, context}")
    parser.add_argument("--batch-size", type=int, action="append", required=True)
    parser.add_argument("--max-answer-len", type=int, default=30)
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    items = json.loads(open(args.questions, encoding="utf-8").read())
    model = AutoModelForQuestionAnswering.from_pretrained(args.model, torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device="cpu")
    out: dict[str, object] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": str(next(model.parameters()).dtype),
        "threads": torch.get_num_threads(),
        "runs": [],
    }
    for batch_size in args.batch_size:
        qa(question=items[0]["question"], context=items[0]["context"])  # warm-up, not timed
        latencies: list[float] = []
        predictions: dict[str, str] = {}
        started = time.perf_counter()
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            t0 = time.perf_counter()
            answers = qa(
                question=[x["question"] for x in chunk],
                context=[x["context"] for x in chunk],
                batch_size=batch_size,
                max_answer_len=args.max_answer_len,
            )
            latencies.append((time.perf_counter() - t0) * 1000)
            if isinstance(answers, dict):
                answers = [answers]
            for item, answer in zip(chunk, answers, strict=True):
                predictions[item["id"]] = answer["answer"]
        out["runs"].append(  # type: ignore[union-attr]
            {
                "batch_size": batch_size,
                "seconds": time.perf_counter() - started,
                "latencies_ms": latencies,
                "predictions": predictions,
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
