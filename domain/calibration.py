"""A pack's calibration slot (``calibration.json``): temperature and abstention threshold fitted on the pack's
dev split, one fit per model version. The service uses the fit for the model it serves; with none, the card's."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg.pack import PackError, first_error


class CalibrationFit(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = Field(min_length=1, description="the checkpoint card's name")
    model_version: str = Field(min_length=1, description="the checkpoint card's version")
    temperature: float = Field(gt=0)
    no_answer_threshold: float = Field(ge=0, le=1)
    question_only_threshold: float | None = Field(
        default=None, ge=0, le=1, description="threshold for questions asked without contexts (retrieved passages)"
    )
    fitted_on: str = Field(min_length=1, description="the QA set it was fitted on, e.g. qa/dev.json")
    questions: int | None = Field(default=None, ge=1)
    ece_before: float | None = None
    ece_after: float | None = None
    fitted_at: date | None = None


class PackCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fits: list[CalibrationFit] = Field(default_factory=list)

    def for_model(self, name: str, version: str) -> CalibrationFit | None:
        """The fit for exactly this model version, if the pack has one."""
        return next((f for f in self.fits if f.model_name == name and f.model_version == version), None)

    @classmethod
    def load(cls, path: Path | None) -> PackCalibration:
        """An absent file is an empty slot."""
        if path is None or not path.exists():
            return cls()
        try:
            calibration = cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise PackError(path, getattr(exc, "lineno", None), first_error(exc)) from exc
        keys = [(f.model_name, f.model_version) for f in calibration.fits]
        if len(keys) != len(set(keys)):
            raise PackError(path, None, "fits: two fits for the same model version")
        return calibration

    def with_fit(self, fit: CalibrationFit) -> PackCalibration:
        """This slot with ``fit`` replacing any earlier fit for the same model version."""
        kept = [f for f in self.fits if (f.model_name, f.model_version) != (fit.model_name, fit.model_version)]
        return PackCalibration(fits=[*kept, fit])

    def save(self, path: Path) -> None:
        text = json.dumps(self.model_dump(mode="json", exclude_none=True), indent=1) + "\n"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
