"""``DomainPack``: one vertical's data, loaded and validated as a whole from its folder (``VQA_PACK``).

A pack folder holds ``pack.json`` (the manifest: name, version, where the parts live, what graph properties
measure), ``corpus/*.md``, ``graph/entities.jsonl`` + ``graph/relations.jsonl``, ``rules.yaml``, ``qa/*.json``
(SQuAD v2) with the fact catalogue ``qa/facts.yaml``, labelled questions for entity linking
(``graph/linking_examples.jsonl``), and the calibration slot ``calibration.json``. Every consumer
(retrieval, graph loading, rules, the QA builder, calibration) takes its part from this object, so a broken pack is
refused in one place with ``file:line: field: reason``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from domain.calibration import PackCalibration
from domain.corpus import FACT_REFERENCE, Document, load_corpus
from domain.linking_examples import LinkingExample, load_linking_examples, with_catalogue
from domain.manifest import PackManifest, PropertySpec
from domain.qa import FactCatalogue, check_qa_file, check_splits
from domain.rules import RuleFile, load_rules
from kg.pack import EntityRow, GraphPack, PackError, first_error
from kg.timeline import Period, fact_periods

MANIFEST = "pack.json"


@dataclass(frozen=True)
class DomainPack:
    root: Path
    manifest: PackManifest
    documents: tuple[Document, ...]
    graph: GraphPack
    rules: RuleFile | None
    calibration: PackCalibration
    catalogue: FactCatalogue | None
    _entities: dict[str, EntityRow] = field(repr=False, default_factory=dict)
    _linking_examples: tuple[LinkingExample, ...] = field(repr=False, default=())

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def rules_path(self) -> Path | None:
        return self.root / self.manifest.rules if self.manifest.rules else None

    @property
    def facts_catalogue(self) -> Path | None:
        return self.root / self.manifest.qa.facts if self.manifest.qa.facts else None

    @cached_property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.manifest.timezone)

    def today(self) -> date:
        """The current date where the pack's customers are (its ``timezone``)."""
        return datetime.now(self.timezone).date()

    def entity(self, entity_id: str) -> EntityRow | None:
        return self._entities.get(entity_id)

    def property_spec(self, name: str) -> PropertySpec | None:
        return self.manifest.properties.get(name)

    def facts_of(self, entity_id: str) -> dict[str, list[Period]]:
        """Every property of an entity as a timeline (undated ones are a single open period)."""
        entity = self._entities.get(entity_id)
        return fact_periods(entity) if entity is not None else {}

    def currency_of(self, entity_id: str) -> str:
        entity = self._entities.get(entity_id)
        currency = entity.props.get("currency") if entity is not None else None
        return str(currency) if isinstance(currency, str) else self.manifest.currency

    @cached_property
    def linking_examples(self) -> tuple[LinkingExample, ...]:
        """Labelled questions for the entity linker: the pack's examples file, then the fact catalogue's questions."""
        catalogue = [(q, f.entity) for f in self.catalogue.facts for q in f.questions] if self.catalogue else []
        return with_catalogue(self._linking_examples, catalogue)

    def qa_path(self, name: str) -> Path:
        spec = next((s for s in self.manifest.qa.sets if s.name == name), None)
        if spec is None:
            raise PackError(self.root / MANIFEST, None, f"qa.sets: no QA set named {name!r}")
        return self.root / spec.path

    def check_qa(self) -> dict[str, Counter[str]]:
        """Check every QA set of the manifest (spans, contexts = document bodies, splits by document)."""
        documents = {d.id: d for d in self.documents}
        counts = {}
        for spec in self.manifest.qa.sets:
            path = self.root / spec.path
            if not path.is_file():
                raise PackError(path, None, f"QA set {spec.name!r} missing (run `vqa pack build-qa`)")
            counts[spec.name] = check_qa_file(path, documents, self._entities.keys())
        check_splits(self.root, self.manifest.qa.sets)
        return counts

    @classmethod
    def load(cls, root: Path) -> DomainPack:
        """Read and validate the whole pack; the first problem raises :class:`PackError`."""
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise PackError(manifest_path, None, "missing: a pack folder needs pack.json (name, version, ...)")
        try:
            manifest = PackManifest.model_validate(json.loads(manifest_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise PackError(manifest_path, getattr(exc, "lineno", None), first_error(exc)) from exc
        try:
            ZoneInfo(manifest.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PackError(manifest_path, None, f"timezone: unknown time zone {manifest.timezone!r}") from exc
        graph = GraphPack.read(
            manifest.name, manifest.version, root / manifest.graph.entities, root / manifest.graph.relations
        )
        documents = tuple(load_corpus(root / manifest.corpus))
        rules = load_rules(root / manifest.rules) if manifest.rules else None
        calibration = PackCalibration.load(root / manifest.calibration if manifest.calibration else None)
        catalogue = FactCatalogue.load(root / manifest.qa.facts) if manifest.qa.facts else None
        entities = {e.id: e for e in graph.entities}
        examples = (
            load_linking_examples(root / manifest.graph.linking_examples, set(entities))
            if manifest.graph.linking_examples
            else ()
        )
        pack = cls(root, manifest, documents, graph, rules, calibration, catalogue, entities, examples)
        pack._check_properties()
        pack._check_documents()
        return pack

    def _check_properties(self) -> None:
        """Every number in the graph says what it measures (pack.json ``properties``); conditions use known terms."""
        specs = self.manifest.properties
        for entity in self.graph.entities:
            path, line = self.graph.entity_lines[entity.id]
            for prop, periods in fact_periods(entity).items():
                spec = specs.get(prop)
                for period in periods:
                    value = period.value
                    numeric = isinstance(value, int | float) and not isinstance(value, bool)
                    if numeric and spec is None:
                        raise PackError(
                            path,
                            line,
                            f"props.{prop}: a number needs its unit: declare {prop!r} in pack.json properties "
                            "(kind money, percent, days, ...)",
                        )
                    if spec is not None and spec.kind == "conditions":
                        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                            raise PackError(path, line, f"props.{prop}: conditions are a list of condition names")
                        unknown = set(value) - spec.terms.keys()
                        if unknown:
                            raise PackError(
                                path, line, f"props.{prop}: {sorted(unknown)} not in pack.json properties terms"
                            )
                    elif spec is not None and not numeric:
                        raise PackError(path, line, f"props.{prop}: {spec.kind} needs a number, got {value!r}")

    def _check_documents(self) -> None:
        known = self._entities
        if self.catalogue is not None and self.facts_catalogue is not None:
            lines = self.catalogue.entity_lines(self.facts_catalogue)
            for fact in self.catalogue.facts:
                if fact.entity not in known:
                    raise PackError(
                        self.facts_catalogue, lines[fact.id], f"facts.{fact.id}.entity: unknown entity {fact.entity!r}"
                    )
        for doc in self.documents:
            unknown = sorted(doc.entities - known.keys())
            if unknown:
                raise PackError(doc.path, _front_matter_line(doc, "entities"), f"entities: unknown ids {unknown}")
            for index, example in enumerate(doc.examples):
                for name, value in example.given.items():
                    if not isinstance(value, str):
                        continue
                    match = FACT_REFERENCE.match(value)
                    assert match is not None  # WorkedExample validated the shape
                    facts = self.facts_of(match["entity"])
                    if match["entity"] not in known or match["property"] not in facts:
                        raise PackError(
                            doc.path,
                            _front_matter_line(doc, "examples"),
                            f"examples[{index}].given.{name}: no graph fact {value!r}",
                        )


def _front_matter_line(doc: Document, key: str) -> int:
    for number, text in enumerate(doc.path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.startswith(f"{key}:"):
            return number
    return 1
