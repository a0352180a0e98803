"""The enwiki sample in gensim's wheel: clean text, gold links, the KG and the alias index."""

from __future__ import annotations

import bz2
import json
from xml.sax.saxutils import escape

import pytest

from kg import KGError, KnowledgeGraph
from kg.wikipedia import WikipediaSample, load_wikipedia_sample, normalize_title

pytest.importorskip("gensim")
pytest.importorskip("mwparserfromhell")


@pytest.fixture(scope="session")
def wiki() -> WikipediaSample:
    return load_wikipedia_sample()


def test_normalize_title() -> None:
    assert normalize_title("political_philosophy#History") == "Political philosophy"
    assert normalize_title("  iPod  touch ") == "IPod touch"
    assert normalize_title(":Anarchism") == "Anarchism"
    assert normalize_title("AT&amp;T") == "AT&T"
    assert normalize_title("#Section") == ""


def test_sensible_numbers(wiki: WikipediaSample) -> None:
    stats = wiki.stats
    assert stats["documents"] == 106 and stats["redirects"] >= 90
    assert 400_000 < stats["words"] < 520_000
    assert 18_000 < stats["links"] < 26_000
    assert 45 <= stats["infoboxes"] <= 60 and stats["infobox_triples"] > 500
    assert stats["entities"] == wiki.graph.num_entities > 15_000
    assert stats["triples"] == wiki.graph.num_triples == stats["infobox_triples"] + stats["links_to_triples"]
    assert wiki.graph.relations[0] == "links_to"
    assert {"birth_place", "spouse", "capital", "influenced"} <= set(wiki.graph.relations)
    assert stats["parse_seconds"] < 60


def test_plain_text_is_clean(wiki: WikipediaSample) -> None:
    for document in wiki.documents:
        text = document.text
        for marker in ("[[", "]]", "{{", "}}", "<ref", "</ref>", "{|", "|}", "thumb|", "Category:", "File:", "&nbsp;"):
            assert marker not in text, (document.title, marker)
        assert text == text.strip() and "  " not in text and "\n\n\n" not in text
    anarchism = wiki.documents[0]
    assert anarchism.title == "Anarchism"
    assert anarchism.text.startswith("Anarchism is a political philosophy that advocates self-governed societies")


def test_links_point_into_the_text(wiki: WikipediaSample) -> None:
    graph = wiki.graph
    for document in wiki.documents:
        previous_end = 0
        for link in document.links:
            assert previous_end <= link.start < link.end <= len(document.text)
            anchor = document.text[link.start : link.end]
            assert anchor == anchor.strip() and anchor
            assert graph.entities[link.entity_id] == link.target
            previous_end = link.end
    first = wiki.documents[0].links[0]
    assert wiki.documents[0].text[first.start : first.end] == "political philosophy"
    assert first.target == "Political philosophy"


def test_redirects_are_resolved(wiki: WikipediaSample) -> None:
    assert wiki.redirects["AccessibleComputing"] == "Computer accessibility"
    targets = {link.target for d in wiki.documents for link in d.links}
    assert not targets & set(wiki.redirects)


def test_graph_and_aliases(wiki: WikipediaSample) -> None:
    graph = wiki.graph
    assert graph.entities[:3] == [d.title for d in wiki.documents[:3]]
    assert graph.entity_labels == graph.entities
    anarchism = graph.entity_id("Anarchism")
    facts = {(graph.relations[r], graph.entities[t]) for h, r, t in graph.triples.tolist() if h == anarchism}
    assert ("links_to", "Political philosophy") in facts
    candidates = wiki.alias_index.lookup("political philosophy")
    assert candidates[0].entity_id == graph.entity_id("Political philosophy")
    ambiguous = dict(wiki.alias_index.ambiguous())
    assert ambiguous, "anchor texts in Wikipedia are ambiguous"
    key, cands = next(iter(ambiguous.items()))
    assert len(cands) > 1 and sum(c.prior for c in cands) == pytest.approx(1.0)
    stats = graph.stats()
    assert stats.num_isolated_entities == 0 and stats.largest_component_size > 0.9 * graph.num_entities


def test_gold_spans(wiki: WikipediaSample) -> None:
    record = wiki.documents[1].to_dict()
    assert set(record) == {"id", "title", "text", "spans"}
    span = record["spans"][0]
    assert span["kind"] == "entity" and span["label"] == "WIKI_LINK" and span["source"] == "gold"
    assert span["entity_id"] >= 0
    json.dumps(record)


def test_round_trip(wiki: WikipediaSample, tmp_path) -> None:
    wiki.graph.save(tmp_path)
    assert KnowledgeGraph.load(tmp_path) == wiki.graph


def test_small_dump(tmp_path) -> None:
    wikitext = """{{Infobox person
| name = Ada
| spouse = [[William King-Noel, 1st Earl of Lovelace|William King]]
| image = [[File:Ada.jpg]]
}}'''Ada''' was a [[mathematician]]s&nbsp;friend of [[Charles_Babbage#Life|Babbage]].<ref>A [[Citation]]</ref>
[[File:Ada.jpg|thumb|A caption with [[Painting]]]]
{| class="wikitable"
| [[Table link]] || cell
|}
== See also ==
* [[Analytical Engine]] {{main|Foo}}
== References ==
{{reflist}} [[Reference section link]]
[[Category:Mathematicians]] [[fr:Ada Lovelace]]
"""
    xml = f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<page><title>Ada Lovelace</title><ns>0</ns><revision><text>{escape(wikitext)}</text></revision></page>
<page><title>Babbage</title><ns>0</ns><redirect title="Charles Babbage" /><revision><text>#REDIRECT [[Charles Babbage]]</text></revision></page>
</mediawiki>"""
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode()))
    sample = load_wikipedia_sample(path)
    document = sample.documents[0]
    assert document.text == "Ada was a mathematicians friend of Babbage.\n\nSee also\n\nAnalytical Engine"
    assert [(document.text[link.start : link.end], link.target) for link in document.links] == [
        ("mathematicians", "Mathematician"),
        ("Babbage", "Charles Babbage"),
        ("Analytical Engine", "Analytical Engine"),
    ]
    graph = sample.graph
    assert ("Ada Lovelace", "spouse", "William King-Noel, 1st Earl of Lovelace") in graph.triple_names()
    assert not any(r == "image" for r in graph.relations)
    for hidden in ("Painting", "Citation", "Table link", "Reference section link", "Foo"):
        assert hidden not in graph.entities
    assert [c.entity_id for c in sample.alias_index.lookup("william king")] == [
        graph.entity_id("William King-Noel, 1st Earl of Lovelace")
    ]
    with pytest.raises(KGError, match="not a readable MediaWiki XML dump"):
        bad = tmp_path / "bad.xml"
        bad.write_text("<mediawiki><page>")
        load_wikipedia_sample(bad)
