"""POST /feedback: a verdict on an answer, recorded once per request id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.api.deps import FeedbackDeskDep, SettingsDep, require_api_key
from app.api.schemas import ModelRef, error_responses, integral_float_to_int
from app.errors import ApiError
from app.feedback import StoreUnavailableError
from app.store.feedback_store import FeedbackConflictError, UnknownRequestError
from app.store.records import FeedbackInput

router = APIRouter(tags=["feedback"], dependencies=[Depends(require_api_key)])

MAX_CORRECTION_CHARS = 1_000
MAX_COMMENT_CHARS = 500


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,  # as /answer: "3" or true for a rating is refused, not coerced
        json_schema_extra={
            # the cross-field rule of _correction_needs_a_wrong_verdict, stated in the schema for clients and fuzzers
            "if": {"properties": {"verdict": {"const": "correct"}}, "required": ["verdict"]},
            "then": {"properties": {"corrected_answer": {"type": "null"}}},
            "examples": [
                {
                    "request_id": "6f1c2b0e9d8a4c51a3e2f0b7c6d5e4f3",
                    "verdict": "incorrect",
                    "corrected_answer": "120 days",
                    "rating": 2,
                    "comment": "it quoted the refund time, not the dispute window",
                }
            ]
        },
    )

    request_id: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,64}$", description="The request_id of the /answer response being judged."
    )
    verdict: Literal["correct", "incorrect", "partially_correct"]
    corrected_answer: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CORRECTION_CHARS,
        pattern=r"\S",
        description="The right answer, as written in the passage (incorrect or partially_correct only).",
    )
    # constraints inside the optional type: on the outer Field pydantic writes them into the schema as "ge"/"le"
    rating: Annotated[int, Field(ge=1, le=5), BeforeValidator(integral_float_to_int)] | None = Field(
        default=None, description="1 (useless) .. 5 (perfect)."
    )
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)

    @model_validator(mode="after")
    def _correction_needs_a_wrong_verdict(self) -> FeedbackRequest:
        if self.corrected_answer is not None and self.verdict == "correct":
            raise ValueError("corrected_answer is only taken with verdict incorrect or partially_correct")
        return self


class FeedbackResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    feedback_id: int
    request_id: str
    verdict: str
    recorded_at: datetime
    model: ModelRef = Field(description="The model version whose answer was judged.")
    duplicate: bool = Field(description="True when the same feedback had been recorded before (nothing changed).")


_ERRORS = error_responses(
    {
        401: "Missing or invalid API key.",
        404: "No answered request with this id within the retention period.",
        409: "Different feedback for this request was recorded before.",
        422: "A field breaks its limit; the message names the field.",
        429: "This API key is over its rate limit (VQA_RATE_LIMIT); honour Retry-After.",
        503: "The feedback store is unavailable, or the service is shutting down; honour Retry-After.",
    }
)


@router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackResponse,
    responses={200: {"model": FeedbackResponse, "description": "The same feedback again: nothing changed."}, **_ERRORS},
)
async def feedback(body: FeedbackRequest, desk: FeedbackDeskDep, settings: SettingsDep) -> JSONResponse:
    """Record a verdict (and optional correction, rating, comment) on an answer; idempotent per request_id."""
    try:
        receipt = await desk.submit(
            FeedbackInput(body.request_id, body.verdict, body.corrected_answer, body.rating, body.comment)
        )
    except UnknownRequestError:
        raise ApiError(
            404,
            "unknown_request",
            f"no answered request {body.request_id!r} is kept: it was never answered here or is older than the "
            f"retention period ({settings.record_retention_days:g} days, VQA_RECORD_RETENTION_DAYS); send the "
            "request_id of a recent /answer response",
        ) from None
    except FeedbackConflictError as exc:
        raise ApiError(
            409,
            "feedback_exists",
            f"different feedback for request {body.request_id!r} was recorded at "
            f"{exc.existing.created_at.isoformat()}; feedback is taken once per answer",
        ) from None
    except StoreUnavailableError as exc:
        raise ApiError(503, "store_unavailable", f"{exc}; retry shortly", {"Retry-After": "5"}) from None
    stored = receipt.feedback
    response = FeedbackResponse(
        feedback_id=stored.id,
        request_id=stored.request_id,
        verdict=stored.verdict,
        recorded_at=stored.created_at,
        model=ModelRef(name=receipt.model_name, version=stored.model_version),
        duplicate=not receipt.created,
    )
    return JSONResponse(response.model_dump(mode="json"), status_code=201 if receipt.created else 200)
