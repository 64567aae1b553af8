"""Entity linking: case and accent folding, word boundaries, longest match, original offsets."""

from __future__ import annotations

from kg.linker import EntityLinker, EntityRef, fold

FEE = EntityRef("fee:card-replacement", "Card replacement fee", "Fee")
CARD = EntityRef("product:visa-debit-card", "Visa Debit Card", "Product")
CAFE = EntityRef("org:cafe-credit", "Café Crédit", "Organisation")
LINKER = EntityLinker([(FEE, ["replacement card fee", "card replacement"]), (CARD, ["debit card", "card"]), (CAFE, [])])


def test_case_and_accents_are_folded_but_offsets_point_into_the_original() -> None:
    text = "Does CAFE CREDIT 😀 charge a Replacement-Card fee? ÉCOLE"
    mentions = LINKER.link("Where is café crédit? 👍🏽 And CAFE CREDIT?")
    assert [(m.entity.id, m.text) for m in mentions] == [(CAFE.id, "café crédit"), (CAFE.id, "CAFE CREDIT")]
    for m in mentions:
        assert "Where is café crédit? 👍🏽 And CAFE CREDIT?"[m.start : m.end] == m.text
    assert LINKER.link(text)[0].text == "CAFE CREDIT"


def test_longest_match_wins_over_its_parts() -> None:
    mentions = LINKER.link("What is the card replacement fee for my debit card?")
    assert [(m.entity.id, m.text) for m in mentions] == [(FEE.id, "card replacement fee"), (CARD.id, "debit card")]


def test_word_boundaries_are_respected() -> None:
    assert LINKER.link("cardholders and discarded postcards") == []
    assert [m.text for m in LINKER.link("my card, please")] == ["card"]


def test_fold_handles_expanding_case_folds() -> None:
    folded, origin = fold("Straße")
    assert folded == "strasse" and origin == [0, 1, 2, 3, 4, 4, 5]


def test_empty_linker_and_text() -> None:
    assert EntityLinker([]).link("anything") == []
    assert LINKER.link("") == []


# ---------------------------------------------------------------- real phrasing
LIMIT = EntityRef("limit:contactless", "Contactless payment limit", "Limit")
CHAPS = EntityRef("fee:chaps-payment", "CHAPS payment fee", "Fee")
SAVER = EntityRef("product:easy-saver", "Easy Saver", "Product")
PHRASING = EntityLinker(
    [(LIMIT, ["contactless limit"]), (CHAPS, ["chaps"]), (FEE, ["replacement card"]), (SAVER, ["savings account"])],
    vocabulary=["mixed", "limited"],
)


def test_typos_in_long_words_are_repaired_and_reported_as_fuzzy() -> None:
    mentions = PHRASING.link("can you up the contactles limit")
    assert [(m.entity.id, m.text, m.method) for m in mentions] == [(LIMIT.id, "contactles limit", "fuzzy")]
    # a swap of two neighbouring letters is one edit
    assert [m.entity.id for m in PHRASING.link("how much is a replacemnet card")] == [FEE.id]


def test_short_words_and_known_words_are_never_repaired() -> None:
    assert PHRASING.link("whats the contactless limt") == [], "4 letters: too short to repair safely"
    assert PHRASING.link("the limited edition") == [], "a corpus word is spelt right, even near an alias word"


def test_inflections_and_function_words() -> None:
    assert [m.entity.id for m in PHRASING.link("How much does it cost to replace my card?")] == [FEE.id]
    assert [m.entity.id for m in PHRASING.link("what do your savings accounts pay")] == [SAVER.id]
    assert [m.entity.id for m in PHRASING.link("whats the latest i can get a CHAPS in")] == [CHAPS.id]


def test_offsets_still_point_into_the_original_text() -> None:
    text = "Hi! Can I raise the Contactles  Limit, please?"
    (mention,) = PHRASING.link(text)
    assert text[mention.start : mention.end] == mention.text == "Contactles  Limit"


def test_threads_linking_at_once_all_get_their_own_answer() -> None:
    # Requests link in worker threads concurrently; a shared Snowball stemmer mixed their words up and raised.
    from concurrent.futures import ThreadPoolExecutor

    linker = EntityLinker([(FEE, ["replacement card fee"]), (CHAPS, ["chaps payments", "same-day transfers"])])
    questions = ["what is the replacement cards fee", "what do chaps payments cost", "same day transfering fees"] * 300
    expected = {q: [m.entity.id for m in linker.link(q)] for q in set(questions)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda q: [m.entity.id for m in linker.link(q)], questions))
    assert got == [expected[q] for q in questions]
    assert all(expected.values())
