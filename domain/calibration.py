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
