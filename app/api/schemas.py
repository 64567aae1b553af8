"""Request and response bodies of the public API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.qa.abstention import AbstentionReason
from kg.pack import PropertyValue

MAX_QUESTION_CHARS = 1_000
MAX_CONTEXTS = 20
MAX_CONTEXT_CHARS = 100_000
MAX_TOP_K = 20
MAX_ANSWER_TOKENS = 64


def integral_float_to_int(value: object) -> object:
    """JSON Schema counts 3.0 as an integer, pydantic's strict mode does not: accept it, still refuse "3" and true."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(integral_float_to_int)]


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(default=None, max_length=200, description="Your id for this context; echoed in answers.")
    text: str = Field(min_length=1, max_length=MAX_CONTEXT_CHARS, description="The passage to search for the answer.")


class AnswerRequest(BaseModel):
    # strict: the schema says integer/number/string, so "3", true and false are refused rather than coerced.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "question": "How long do I have to dispute a card payment?",
                    "contexts": [
                        {
                            "id": "disputes-policy",
                            "text": "You can dispute a card payment within 120 days of the transaction date.",
                        }
                    ],
                    "top_k": 1,
                }
            ]
        },
    )

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=r"\S")
    contexts: list[Context] = Field(
        default_factory=list,
        max_length=MAX_CONTEXTS,
        description="Passages to search. Empty or absent: the best passages of the domain corpus are retrieved.",
    )
    top_k: WholeNumber = Field(default=1, ge=1, le=MAX_TOP_K, description="How many answer spans to return.")
    max_answer_len: WholeNumber = Field(
        default=30, ge=1, le=MAX_ANSWER_TOKENS, description="Longest answer, in tokens."
    )
    min_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Abstain when the best span scores lower; default: the model's."
    )


class AnswerSpan(BaseModel):
    text: str
    score: float = Field(description="Calibrated probability (0..1) that this span is the answer.")
    start: int = Field(description="Character offset into the context where the answer starts.")
    end: int = Field(description="Character offset where it ends (exclusive): context[start:end] == text.")
    context_id: str | None = Field(description="The context's id, or its index as a string when it had none.")
    context_index: int
    redacted: bool = Field(
        default=False, description="Payment identifiers in text were masked (then text != context[start:end])."
    )


class Abstention(BaseModel):
    reason: AbstentionReason = Field(description="Why no answer is given; one of a closed set.")
    detail: str = Field(default="", description="For people: the score and threshold, the rule that blocked, ...")
    best_score: float
    threshold: float


class ModelRef(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str


class Timings(BaseModel):
    queue: float
    inference: float
    graph: float = Field(description="Entity linking and graph lookups (0 when the graph is disabled).")
    total: float


class RuleOutcomeOut(BaseModel):
    rule_id: str
    action: Literal["append_disclaimer", "redact", "flag", "escalate", "block"]
    message: str


class EntityRefOut(BaseModel):
    id: str = Field(description="Graph id, e.g. fee:card-replacement.")
    name: str
    type: str = Field(description="Graph label: Product, Fee, Limit, Rate, Term, Regulation, Procedure, ...")


class EntityOut(EntityRefOut):
    text: str = Field(description="The words that named it (the whole question when found by similarity).")
    start: int = Field(description="Character offset into the question or answer text.")
    end: int
    source: str = Field(description="'question' or 'answer:<index>' (index into answers).")
    method: Literal["alias", "fuzzy", "embedding", "document"] = Field(
        default="alias",
        description="alias: a name or alias; fuzzy: the same with a typo repaired; embedding: the question is "
        "similar to the entity's description (no words name it).",
    )


class RelationOut(BaseModel):
    type: str = Field(description="Relationship type, e.g. HAS_FEE.")
    direction: Literal["in", "out"]
    other: EntityRefOut
    properties: dict[str, PropertyValue] = Field(default_factory=dict)


class ScheduledChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    property: str
    from_: PropertyValue | None = Field(alias="from", description="The value in force today.")
    to: PropertyValue | None = Field(description="The value from `on` (null: the property stops applying).")
    on: str = Field(description="ISO date the change takes effect.")


class FactOut(BaseModel):
    entity: EntityRefOut
    properties: dict[str, PropertyValue] = Field(
        description="The entity's graph properties (amounts, rates, ...), as in force today."
    )
    changes: list[ScheduledChangeOut] = Field(
        default_factory=list, description="Changes to these properties scheduled after today."
    )
    relations: list[RelationOut] = Field(default_factory=list)


class RetrievedPassage(BaseModel):
    id: str = Field(description="Passage id (<document id>#<index>); answers name it as context_id.")
    doc_id: str
    title: str
    score: float


class AnswerResponse(BaseModel):
    request_id: str
    answers: list[AnswerSpan]
    abstained: bool
    abstention: Abstention | None = None
    model: ModelRef
    timings_ms: Timings
    # Knowledge-graph enrichment and the rule checks that fired.
    entities: list[EntityOut] = Field(
        default_factory=list, description="Graph entities named in the question and answers (linked from the pack)."
    )
    facts: list[FactOut] = Field(default_factory=list, description="Their graph facts (empty when the graph is off).")
    rules: list[RuleOutcomeOut] = Field(default_factory=list)
    rules_version: str = "none"
    retrieved: list[RetrievedPassage] = Field(
        default_factory=list, description="Corpus passages used as contexts when the request had none."
    )
    graph_status: Literal["ok", "unavailable", "disabled"] = "disabled"


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    details: list[dict[str, str]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# What any route may answer before or beside its own logic: the HTTP layer and middleware (invalid JSON or HTTP, a
# request not received in time, a body over the limit), an internal error and the drain before a stop.
HTTP_LAYER_ERRORS: dict[int, str] = {
    400: "Body is not valid JSON (invalid_json) or the request is not valid HTTP (invalid_http).",
    408: "Headers or body not received within VQA_HEADER_TIMEOUT_S / VQA_BODY_TIMEOUT_S; the connection is closed.",
    413: "Body over VQA_MAX_BODY_BYTES.",
    500: "An internal error; quote the request id. The connection is closed.",
    503: "Shutting down after SIGTERM (shutting_down, with Connection: close); honour Retry-After.",
}


def error_responses(route_errors: dict[int, str]) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` for a route's own error statuses plus the HTTP layer's, all in the one error body."""
    return {
        code: {"model": ErrorBody, "description": text} for code, text in {**HTTP_LAYER_ERRORS, **route_errors}.items()
    }
